"""API key hashing: the control plane stores and ships only hashes of consumer keys."""

from __future__ import annotations

import hashlib
import secrets

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """Hash of an API key as stored and shipped to data planes."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random API key."""
    return "ml-" + secrets.token_urlsafe(32)


def is_key_hash(value: str) -> bool:
    """Whether ``value`` is a key hash as :func:`hash_key` writes it."""
    digest = value.removeprefix(HASH_PREFIX)
    return (
        value.startswith(HASH_PREFIX)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )
