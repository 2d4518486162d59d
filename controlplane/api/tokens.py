"""The operator tokens file: scopes, hashing, reading and appending (no gRPC here: the CLI's
``meterline tokens`` reads it without loading the server's interceptors). auth.py checks the
tokens on each call."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from controlplane.errors import InvalidArgument

TOKEN_PREFIX = "mlt_"
READ_ONLY_VERBS = ("Get", "List", "Preview", "Query")


class Scope(StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: Scope
    hash: str


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_tokens(path: Path) -> list[TokenEntry]:
    """The entries of a tokens file; a malformed file is an error naming the entry."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{path}: not valid YAML: {exc}") from None
    entries = []
    for i, raw in enumerate(document.get("tokens") or []):
        if not isinstance(raw, dict) or not {"name", "scope", "hash"} <= raw.keys():
            raise InvalidArgument(f"{path}: tokens[{i}] needs name, scope and hash")
        if raw["scope"] not in Scope.__members__.values():
            raise InvalidArgument(
                f"{path}: tokens[{i}] ({raw['name']}): scope must be read or admin"
            )
        if not str(raw["hash"]).startswith("sha256:"):
            raise InvalidArgument(f"{path}: tokens[{i}] ({raw['name']}): hash must be sha256:...")
        entries.append(
            TokenEntry(name=str(raw["name"]), scope=Scope(raw["scope"]), hash=raw["hash"])
        )
    return entries


def add_token(path: Path, *, name: str, scope: Scope) -> str:
    """Append a new token to the tokens file (created 0600 if missing); return the plain token."""
    entries = load_tokens(path) if path.exists() else []
    if any(e.name == name for e in entries):
        raise InvalidArgument(f"a token named {name!r} already exists in {path}")
    token = new_token()
    entries.append(TokenEntry(name=name, scope=scope, hash=hash_token(token)))
    document = {
        "tokens": [{"name": e.name, "scope": e.scope.value, "hash": e.hash} for e in entries]
    }
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return token


def is_read_only(method: str) -> bool:
    """Whether a full gRPC method name ("/pkg.Service/Method") only reads."""
    return method.rsplit("/", 1)[-1].startswith(READ_ONLY_VERBS)
