"""Request paths normalised before anything matches or forwards them (RFC 3986 section 6.2.2).

A path is matched against routes and its rest appended to a provider's base URL, so it must
mean one thing to the gateway and to the provider: percent-encoded unreserved characters are
decoded (``%2e`` is ``.``, ``%7E`` is ``~``), other escapes are kept as sent with upper-case
hex, and dot segments are removed (section 5.2.4). What an upstream could still read as a dot
segment after decoding what stays encoded (``..%2F``, ``%2F..``, a backslash) is refused, as
is a NUL byte: no request can climb out of the route's upstream base.
"""

from __future__ import annotations

import re
from typing import Final

from dataplane.errors import DataPlaneError


class UnsafePath(DataPlaneError):
    """A request path refused with 400 (it could leave the route's upstream base)."""


_ESCAPE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match.group(1), 16)
    if byte in _UNRESERVED:
        return bytes((byte,))
    return b"%" + match.group(1).upper()


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4, for an absolute path (``..`` above the root stays at it)."""
    output: list[bytes] = []
    segments = path.split(b"/")
    # "/a/b/" splits to ["", "a", "b", ""]: the leading "" is the root.
    for index, segment in enumerate(segments[1:], start=1):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                output.append(b"")
        elif segment == b"..":
            if output:
                output.pop()
            if last:
                output.append(b"")
        else:
            output.append(segment)
    return b"/" + b"/".join(output)


def normalize_path(raw: bytes) -> bytes:
    """``raw`` normalised (see the module docstring); UnsafePath if it must be refused."""
    if b"%" not in raw and b"." not in raw and b"\\" not in raw and b"\x00" not in raw:
        return raw  # the common case: nothing to decode, no dot segment possible
    path = _ESCAPE.sub(_decode_unreserved, raw) if b"%" in raw else raw
    if not path.startswith(b"/"):
        path = b"/" + path
    if b"/." in path:
        path = remove_dot_segments(path)
    # What a lenient upstream might still decode into a separator or a dot segment.
    decoded = (
        path.replace(b"%2F", b"/")
        .replace(b"%5C", b"/")
        .replace(b"\\", b"/")
        .replace(b"%00", b"\x00")
    )
    if b"\x00" in decoded:
        raise UnsafePath("a NUL byte in the path")
    if decoded != path:
        for segment in decoded.split(b"/"):
            if segment in (b".", b".."):
                raise UnsafePath("an encoded separator makes a dot segment in the path")
    return path
