"""The shape of keys and names operators give resources (docs/limits.md).

A *key* names a resource in URLs and resource names (``customers/<key>``): 1 to 128 ASCII
characters, letters, digits and ``. _ ~ : @ -``, starting with a letter or a digit, so it never
holds ``/``, spaces, control or look-alike characters. A *name* is free text shown to people
(display names, consumer usernames, subjects): at most 200 characters, no control or format
characters (which covers bidi overrides such as U+202E and zero-width characters).
"""

from __future__ import annotations

import re
import unicodedata

from controlplane.errors import InvalidArgument

MAX_KEY_LENGTH = 128
MAX_NAME_LENGTH = 200
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:@-]{0,127}")


def _shown(value: str) -> str:
    # Enough of a bad value to recognise it, escaped, never 100 KB of it.
    return repr(value[:40]) + ("..." if len(value) > 40 else "")


def check_key(value: str, *, field: str) -> str:
    """``value`` if it is a valid key, else InvalidArgument naming ``field``."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; at most {MAX_KEY_LENGTH}: {_shown(value)}"
        )
    if _KEY.fullmatch(value) is None:
        raise InvalidArgument(
            f"{field} {_shown(value)} must be letters, digits and . _ ~ : @ - (starting with a"
            " letter or digit)"
        )
    return value


def check_name(value: str, *, field: str, required: bool = True) -> str:
    """``value`` if it is a valid name, else InvalidArgument naming ``field``."""
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required")
        return value
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; at most {MAX_NAME_LENGTH}: {_shown(value)}"
        )
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise InvalidArgument(
                f"{field} {_shown(value)} holds U+{ord(char):04X}: no control, format (bidi,"
                " zero-width) or unassigned characters"
            )
    return value
