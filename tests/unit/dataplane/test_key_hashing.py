"""Key hashing as snapshots carry it."""

from __future__ import annotations

import hashlib

import pytest

from dataplane.config.keys import hash_key, is_key_hash


def test_hash_is_sha256_hex_with_prefix() -> None:
    assert hash_key("sk-acme") == "sha256:" + hashlib.sha256(b"sk-acme").hexdigest()
    assert hash_key("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param(hash_key("x"), True, id="ours"),
        pytest.param(hash_key("x").upper(), False, id="upper-case"),
        pytest.param("sha256:abc", False, id="short"),
        pytest.param(hash_key("x")[7:], False, id="no-prefix"),
    ],
)
def test_is_key_hash(value: str, ok: bool) -> None:
    assert is_key_hash(value) is ok
