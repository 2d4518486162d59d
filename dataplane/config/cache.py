"""The config cache: the last good snapshot on disk, to restart without the control plane.

One file, ``config.bin``, holds the serialized ``ConfigResponse`` of the last applied snapshot
(its ``version_info`` included). It is replaced atomically (write a temporary file, fsync,
rename, fsync the directory), so a crash leaves the old cache or the new one, never half of
one. The snapshot carries provider secrets: the directory is created 0700 and the file 0600,
and with a key (a Fernet key: 32 url-safe base64 bytes) the file is encrypted and
authenticated, so a copied or altered cache does not load.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from pathlib import Path

from dataplane.errors import ConfigError
from dataplane.statedir import ensure_private_dir, write_private_file
from meterline.dataplane.v1 import config_pb2

logger = logging.getLogger(__name__)

CACHE_FILE = "config.bin"
NODE_ID_FILE = "node-id"
# Prefixes tell an encrypted cache from a plain one, so a key change is a clear error.
_PLAIN = b"MLC1P"
_ENCRYPTED = b"MLC1E"


class CacheError(ConfigError):
    """The cache exists but cannot be used (bad key, corrupt file)."""


def stable_node_id(state_dir: Path, *, explicit: str | None = None) -> str:
    """The node id kept in ``state_dir``: ``explicit`` if given, else the stored or a new one.

    A data plane restarted on the same state directory keeps its identity (and its spool's
    events keep their source).
    """
    path = ensure_private_dir(state_dir) / NODE_ID_FILE
    if explicit:
        return explicit
    with contextlib.suppress(FileNotFoundError):
        stored = path.read_text().strip()
        if stored:
            return stored
    node_id = f"{socket.gethostname()}-{secrets.token_hex(3)}"
    write_private_file(path, node_id.encode() + b"\n")
    return node_id


def load_key(*, key_file: Path | None, env_value: str | None) -> bytes | None:
    """The cache key from ``--cache-key-file`` or ``METERLINE_CACHE_KEY`` (None: no encryption)."""
    if key_file is not None:
        return key_file.read_bytes().strip()
    if env_value:
        return env_value.strip().encode()
    return None


class ConfigCache:
    """Reads and writes the last good ``ConfigResponse`` in one directory."""

    def __init__(self, directory: Path, *, key: bytes | None = None) -> None:
        self.directory = directory
        self.path = directory / CACHE_FILE
        self._fernet = None
        if key is not None:
            from cryptography.fernet import Fernet

            try:
                self._fernet = Fernet(key)
            except ValueError as exc:
                raise CacheError(
                    "the cache key must be a Fernet key (32 url-safe base64-encoded bytes)"
                ) from exc

    def save(self, response: config_pb2.ConfigResponse) -> None:
        """Store ``response`` (an applied snapshot) atomically, replacing the previous one."""
        payload = response.SerializeToString()
        if self._fernet is not None:
            data = _ENCRYPTED + self._fernet.encrypt(payload)
        else:
            data = _PLAIN + payload
        ensure_private_dir(self.directory)
        write_private_file(self.path, data)

    def load(self) -> config_pb2.ConfigResponse | None:
        """The cached response, or None when there is none. Raise CacheError if unusable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if data.startswith(_ENCRYPTED):
            if self._fernet is None:
                raise CacheError("the config cache is encrypted and no cache key is configured")
            from cryptography.fernet import InvalidToken

            try:
                payload = self._fernet.decrypt(data[len(_ENCRYPTED) :])
            except InvalidToken:
                raise CacheError(
                    "the config cache does not decrypt with the configured key"
                ) from None
        elif data.startswith(_PLAIN):
            if self._fernet is not None:
                # A key is configured: an unencrypted file may have been planted. Refuse it.
                raise CacheError("the config cache is not encrypted but a cache key is configured")
            payload = data[len(_PLAIN) :]
        else:
            raise CacheError("the config cache is not a Meterline cache file")
        response = config_pb2.ConfigResponse()
        try:
            response.ParseFromString(payload)
        except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
            raise CacheError(f"the config cache is corrupt: {exc}") from None
        return response
