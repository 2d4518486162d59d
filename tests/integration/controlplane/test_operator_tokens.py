"""Operator bearer tokens with scopes, enforced by the interceptor on a real grpc.aio server."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest

from controlplane.api.auth import Scope, TokenAuthInterceptor, add_token, is_read_only, load_tokens
from controlplane.errors import InvalidArgument

SERVICE = "meterline.admin.v1.CustomerService"
GUARDED = ("/meterline.admin.v1.",)


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _server(tokens: Path) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        interceptors=[TokenAuthInterceptor(load_tokens(tokens), guarded_prefixes=GUARDED)]
    )
    handlers = {
        m: grpc.unary_unary_rpc_method_handler(_echo) for m in ("GetCustomer", "CreateCustomer")
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(SERVICE, handlers),
            grpc.method_handlers_generic_handler(
                "meterline.dataplane.v1.Other", {"Ping": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _call(port: int, method: str, token: str | None) -> bytes:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await channel.unary_unary(method)(b"x", metadata=metadata, timeout=5)


async def test_tokens_and_scopes_are_enforced(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    admin = add_token(tokens, name="ops", scope=Scope.ADMIN)
    reader = add_token(tokens, name="grafana", scope=Scope.READ)
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert admin not in tokens.read_text() and reader not in tokens.read_text()
    server, port = await _server(tokens)
    get, create = f"/{SERVICE}/GetCustomer", f"/{SERVICE}/CreateCustomer"
    try:
        assert await _call(port, get, admin) == b"x"
        assert await _call(port, create, admin) == b"x"
        assert await _call(port, get, reader) == b"x"
        for method, token, code in [
            (create, reader, grpc.StatusCode.PERMISSION_DENIED),
            (get, None, grpc.StatusCode.UNAUTHENTICATED),
            (get, "mlt_not-a-token", grpc.StatusCode.UNAUTHENTICATED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(port, method, token)
            assert err.value.code() == code
        # Services outside the guarded prefixes are not the interceptor's business.
        assert await _call(port, "/meterline.dataplane.v1.Other/Ping", None) == b"x"
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("method", "read_only"),
    [
        pytest.param("/meterline.admin.v1.BillingService/PreviewInvoice", True, id="preview"),
        pytest.param("/meterline.admin.v1.UsageService/QueryMeter", True, id="query"),
        pytest.param("/meterline.admin.v1.GatewayService/ListConsumers", True, id="list"),
        pytest.param("/meterline.admin.v1.GatewayService/ApplyConfig", False, id="apply"),
        pytest.param("/meterline.admin.v1.CatalogService/PublishPlan", False, id="publish"),
    ],
)
def test_read_only_methods(method: str, read_only: bool) -> None:
    assert is_read_only(method) is read_only


def test_bad_tokens_files_are_clear_errors(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    add_token(tokens, name="ops", scope=Scope.ADMIN)
    before = tokens.read_text()
    with pytest.raises(InvalidArgument, match="already exists"):
        add_token(tokens, name="ops", scope=Scope.READ)
    assert tokens.read_text() == before
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - {name: x, scope: root, hash: 'sha256:00'}\n")
    with pytest.raises(InvalidArgument, match=r"tokens\[0\] \(x\): scope"):
        load_tokens(bad)
    bad.write_text("tokens: [{name: y}]\n")
    with pytest.raises(InvalidArgument, match="needs name, scope and hash"):
        load_tokens(bad)


def test_cli_creates_a_token_once(tmp_path: Path) -> None:
    from support.processes import meterline

    tokens = tmp_path / "tokens.yaml"
    created = meterline("tokens", "create", "ci", "--scope", "admin", "--file", str(tokens))
    assert created.returncode == 0, created.stderr
    # Only the token on stdout (scripts capture it); the note for people goes to stderr.
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and token.startswith("mlt_")
    assert "shown once" in created.stderr
    (entry,) = load_tokens(tokens)
    assert (entry.name, entry.scope) == ("ci", Scope.ADMIN)
    again = meterline("tokens", "create", "ci", "--file", str(tokens))
    assert again.returncode == 1 and "already exists" in again.stderr and not again.stdout
    kept = meterline("tokens", "create", "ci", "--file", str(tokens), "--exist-ok")
    assert kept.returncode == 0 and "not shown again" in kept.stderr and not kept.stdout
    assert load_tokens(tokens) == [entry]
