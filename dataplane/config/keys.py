"""API key hashing: snapshots carry keys only as "sha256:" + hex digest."""

from __future__ import annotations

import hashlib
import re

KEY_HASH_PREFIX = "sha256:"
_KEY_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """Return the snapshot form of ``key``: ``sha256:<hex digest of its UTF-8 bytes>``."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def is_key_hash(value: str) -> bool:
    """Tell whether ``value`` is a well-formed key hash (lower-case hex)."""
    return _KEY_HASH_RE.fullmatch(value) is not None
