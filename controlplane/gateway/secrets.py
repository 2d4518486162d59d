"""Provider keys at rest: plugin ``auth.header_value`` / ``auth.param_value`` encrypted in the
database with Fernet (``cryptography``), decrypted only to build data-plane snapshots.

The key comes from configuration (``--secrets-key-file`` or ``METERLINE_SECRETS_KEY``): one
Fernet key per line (or comma-separated in the variable). The first encrypts; every one
decrypts, so a key is rotated by putting the new one first and restarting: at start the
control plane re-encrypts every stored value with the first key (and encrypts values stored
in plaintext before a key was configured, e.g. rows older than migration 0008).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from controlplane.errors import FailedPrecondition, InvalidArgument

SEALED_PREFIX = "enc:fernet:"
# Provider keys, Redis passwords, Google service accounts and Kong's other cloud
# credentials (accepted, not enforced).
SECRET_FIELDS = frozenset(
    {
        "header_value",
        "param_value",
        "password",
        "sentinel_password",
        "aws_secret_access_key",
        "azure_client_secret",
        "gcp_service_account_json",
    }
)


class SecretBox:
    """Encrypts and decrypts provider keys with one or more Fernet keys (the first encrypts)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise InvalidArgument("no secrets key given")
        try:
            fernets = [Fernet(key) for key in keys]
            self._primary = fernets[0]
            self._fernet = MultiFernet(fernets)
        except ValueError:
            raise InvalidArgument(
                "a secrets key must be a Fernet key (32 url-safe base64-encoded bytes; "
                'python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            ) from None

    @classmethod
    def from_sources(cls, *, key_file: Path | None, env_value: str | None) -> SecretBox | None:
        """The box from ``--secrets-key-file`` or ``METERLINE_SECRETS_KEY`` (None: neither)."""
        if key_file is not None:
            try:
                text = key_file.read_text()
            except OSError as exc:
                raise InvalidArgument(f"--secrets-key-file: {exc}") from None
            return cls([line.strip().encode() for line in text.splitlines() if line.strip()])
        if env_value:
            return cls([part.strip().encode() for part in env_value.split(",") if part.strip()])
        return None

    def seal(self, value: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        try:
            return self._fernet.decrypt(value.removeprefix(SEALED_PREFIX).encode()).decode()
        except InvalidToken:
            raise FailedPrecondition(
                "a stored provider key was encrypted with a key this control plane does not "
                "have (check --secrets-key-file / METERLINE_SECRETS_KEY)"
            ) from None

    def reseal(self, value: str) -> str:
        """``value`` encrypted with the first key (rotation); unchanged if it already is."""
        token = value.removeprefix(SEALED_PREFIX).encode()
        try:
            self._primary.decrypt(token)
            return value
        except InvalidToken:
            pass
        try:
            return SEALED_PREFIX + self._fernet.rotate(token).decode()
        except InvalidToken:
            self.open(value)  # raises the readable error
            raise


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _walk(value: Any, change: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: change(v) if k in SECRET_FIELDS and isinstance(v, str) and v else _walk(v, change)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_walk(v, change) for v in value]
    return value


def seal_config(config: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """``config`` with every provider key encrypted (unchanged without a box)."""
    if box is None:
        return dict(config)
    return dict(_walk(config, lambda v: v if is_sealed(v) else box.seal(v)))


def open_config(config: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """``config`` with every provider key in plaintext; an encrypted one needs the box."""

    def open_one(value: str) -> str:
        if not is_sealed(value):
            return value
        if box is None:
            raise FailedPrecondition(
                "stored provider keys are encrypted but no secrets key is configured "
                "(--secrets-key-file or METERLINE_SECRETS_KEY)"
            )
        return box.open(value)

    return dict(_walk(config, open_one))


def reseal_config(config: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """``config`` with every provider key encrypted under the box's first key."""
    return dict(_walk(config, lambda v: box.reseal(v) if is_sealed(v) else box.seal(v)))
