"""Operator authentication: bearer tokens with scopes, checked by one gRPC interceptor.

Tokens are listed, hashed, in a tokens file (YAML: ``tokens: [{name, scope, hash}]``) that
``meterline tokens create`` appends to; the plain token is shown once and never stored. Scope
``read`` may call read-only methods (Get*, List*, Preview*, Query*); ``admin`` may call all.
Only operator services are guarded here: data planes authenticate with certificates on the
cluster listener, and an operator token opens no data-plane stream there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from controlplane.api.tokens import (
    READ_ONLY_VERBS,
    TOKEN_PREFIX,
    Scope,
    TokenEntry,
    add_token,
    hash_token,
    is_read_only,
    load_tokens,
    new_token,
)
from controlplane.errors import InvalidArgument
from controlplane.pki import Role, certificate_role

__all__ = [
    "READ_ONLY_VERBS",
    "TOKEN_PREFIX",
    "Scope",
    "TokenEntry",
    "add_token",
    "hash_token",
    "is_read_only",
    "load_tokens",
    "new_token",
]

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


# -- the cluster listener: data planes, by certificate ------------------------------------------

OPERATOR_PREFIXES = ("/meterline.admin.v1.",)


@dataclass(frozen=True)
class ClusterTLS:
    """The cluster listener's mutual TLS: its certificate and the CA its clients must chain to."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_files(cls, *, cert: Path, key: Path, ca: Path) -> ClusterTLS:
        try:
            return cls(cert=cert.read_bytes(), key=key.read_bytes(), ca=ca.read_bytes())
        except OSError as exc:
            raise InvalidArgument(f"cannot read a cluster TLS file: {exc}") from None

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if require_client_auth else None,
            require_client_auth=require_client_auth,
        )


@dataclass(frozen=True)
class Trust:
    """How a control plane authenticates: operators by token, data planes by certificate.

    ``cluster_listen`` serves only the data-plane services, over mutual TLS; the operator
    listener serves the admin services (tokens required) and, with ``operator_tls``, TLS with
    the same server certificate.
    """

    tokens: list[TokenEntry]
    cluster_listen: str
    tls: ClusterTLS
    operator_tls: bool = False


def peer_refusal(auth_context: Mapping[str, Any]) -> str | None:
    """Why a peer may not use the cluster listener (None: it is a data plane)."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return "a data-plane client certificate is required"
    pem = pems[0] if isinstance(pems[0], bytes) else str(pems[0]).encode()
    role = certificate_role(pem)
    if role is not Role.DATAPLANE:
        name = auth_context.get("x509_common_name") or [b"?"]
        common_name = name[0].decode() if isinstance(name[0], bytes) else str(name[0])
        return (
            f"certificate {common_name!r} has role {role.value if role else 'none'}; "
            "only data-plane certificates may use the cluster listener"
        )
    return None


class ClusterAuthInterceptor(grpc.aio.ServerInterceptor):
    """On the cluster listener: refuse every call whose peer certificate is not a data plane's.

    The TLS handshake already required a certificate signed by the Meterline CA; this checks
    its role (a control-plane server certificate is signed by the same CA). ``drain`` ends the
    open streams with OK, so data planes reconnect (to another replica) at once instead of
    waiting for the server's grace period to cancel them. With ``check_certificates`` off
    (development mode, plaintext) it only does the latter.
    """

    def __init__(self, *, check_certificates: bool = True) -> None:
        self._draining = asyncio.Event()
        self._check = check_certificates

    def drain(self) -> None:
        self._draining.set()

    async def _guard(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self._check:
            return
        refusal = peer_refusal(context.auth_context())
        if refusal is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)

    async def _until_drained(self, responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        drained = asyncio.ensure_future(self._draining.wait())
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(responses))
                await asyncio.wait({step, drained}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    return  # draining: the finally ends the servicer's generator
                try:
                    response = step.result()
                except StopAsyncIteration:
                    return
                yield response
        finally:
            drained.cancel()
            # Also when the client went away (this generator is closed mid-wait).
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not (self._check or handler.response_streaming):
            return handler
        guard, until_drained = self._guard, self._until_drained
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.stream_stream is not None:
            behavior = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
                await guard(context)
                async for response in until_drained(behavior(requests, context)):
                    yield response

            return grpc.stream_stream_rpc_method_handler(stream_stream, **options)
        if handler.unary_stream is not None:
            unary_stream_behavior = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await guard(context)
                async for response in until_drained(unary_stream_behavior(request, context)):
                    yield response

            return grpc.unary_stream_rpc_method_handler(unary_stream, **options)
        if handler.stream_unary is not None:
            stream_unary_behavior = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                await guard(context)
                return await stream_unary_behavior(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
        unary_behavior = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await guard(context)
            return await unary_behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)


def trust_from_files(
    *,
    tokens_file: Path | None,
    cluster_listen: str,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    operator_tls: bool,
) -> Trust:
    """The control plane's Trust from its flags; a missing one is an error naming it."""
    missing = [
        flag
        for flag, value in (
            ("--tokens-file", tokens_file),
            ("--cluster-cert", cert),
            ("--cluster-key", key),
            ("--cluster-ca", ca),
        )
        if value is None
    ]
    if missing:
        raise InvalidArgument(
            f"missing {', '.join(missing)}: the control plane needs operator tokens and the "
            "cluster certificate (`meterline tokens create`, `meterline pki init`), or "
            "--insecure-dev for plaintext without authentication on one port"
        )
    assert tokens_file and cert and key and ca
    if not tokens_file.exists():
        raise InvalidArgument(f"{tokens_file}: no such tokens file (`meterline tokens create`)")
    tokens = load_tokens(tokens_file)
    if not tokens:
        raise InvalidArgument(f"{tokens_file}: no tokens; nobody could call the operator API")
    tls = ClusterTLS.from_files(cert=cert, key=key, ca=ca)
    return Trust(tokens=tokens, cluster_listen=cluster_listen, tls=tls, operator_tls=operator_tls)
