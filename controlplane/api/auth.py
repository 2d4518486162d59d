"""Operator authentication: bearer tokens with scopes, checked by one gRPC interceptor.

Tokens are listed, hashed, in a tokens file (YAML: ``tokens: [{name, scope, hash}]``) that
``meterline tokens create`` appends to; the plain token is shown once and never stored. Scope
``read`` may call read-only methods (Get*, List*, Preview*, Query*); ``admin`` may call all.
Only operator services are guarded here: data planes authenticate with certificates on the
cluster listener, and an operator token opens no data-plane stream there.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
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


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses operator calls without a valid token or with too small a scope."""

    def __init__(self, entries: list[TokenEntry], *, guarded_prefixes: tuple[str, ...]) -> None:
        self._by_hash: Mapping[str, TokenEntry] = {e.hash: e for e in entries}
        self._guarded = guarded_prefixes

    def _check(
        self, method: str, metadata: Mapping[str, str]
    ) -> tuple[grpc.StatusCode, str] | None:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "an operator token is required (authorization: Bearer ...)",
            )
        digest = hash_token(token)
        entry = next((e for h, e in self._by_hash.items() if hmac.compare_digest(h, digest)), None)
        if entry is None:
            return grpc.StatusCode.UNAUTHENTICATED, "unknown operator token"
        if entry.scope is Scope.READ and not is_read_only(method):
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {entry.name!r} has scope read; {method.rsplit('/', 1)[-1]} needs admin",
            )
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        if not method.startswith(self._guarded):
            return await continuation(handler_call_details)
        metadata = {
            k: v if isinstance(v, str) else v.decode()
            for k, v in (handler_call_details.invocation_metadata or ())
        }
        refusal = self._check(method, metadata)
        if refusal is None:
            return await continuation(handler_call_details)
        code, message = refusal

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(code, message)

        handler = await continuation(handler_call_details)
        if handler is not None and handler.request_streaming:

            async def deny_stream(request_iterator: Any, context: Any) -> Any:
                await context.abort(code, message)
                yield  # pragma: no cover - abort raises

            return grpc.stream_stream_rpc_method_handler(deny_stream)
        return grpc.unary_unary_rpc_method_handler(deny)
