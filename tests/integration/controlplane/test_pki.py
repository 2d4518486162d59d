"""`meterline pki`: a CA whose certificates really authenticate both ends of a gRPC link."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from controlplane import pki
from controlplane.errors import AlreadyExists, InvalidArgument, NotFound
from support.processes import meterline

NOW = datetime(2026, 11, 26, tzinfo=UTC)
PING = "/meterline.test.Ping/Ping"


async def _serve_mtls(directory: Path) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "meterline.test.Ping",
                {"Ping": grpc.unary_unary_rpc_method_handler(_identity_async)},
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [((directory / pki.SERVER_KEY).read_bytes(), (directory / pki.SERVER_CERT).read_bytes())],
        root_certificates=(directory / pki.CA_CERT).read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


async def _identity_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _ping(port: int, credentials: grpc.ChannelCredentials) -> bytes:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        call = channel.unary_unary(PING)
        return await call(b"hello", timeout=5)


def _client(
    directory: Path, name: str | None, ca_dir: Path | None = None
) -> grpc.ChannelCredentials:
    ca = ((ca_dir or directory) / pki.CA_CERT).read_bytes()
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(directory / f"{name}.key").read_bytes(),
        certificate_chain=(directory / f"{name}.crt").read_bytes(),
    )


async def test_a_dataplane_certificate_opens_the_link_and_nothing_else_does(tmp_path: Path) -> None:
    # Given a PKI with one data-plane certificate, and a second, unrelated PKI...
    cluster, other = tmp_path / "cluster", tmp_path / "other"
    pki.init(cluster, hosts=["127.0.0.1", "localhost"], now=NOW)
    pki.issue_dataplane(cluster, name="dp-1", now=NOW)
    pki.init(other, hosts=["127.0.0.1"], now=NOW)
    pki.issue_dataplane(other, name="intruder", now=NOW)
    server, port = await _serve_mtls(cluster)
    try:
        # ...the data plane's certificate is accepted...
        assert await _ping(port, _client(cluster, "dp-1")) == b"hello"
        # ...no client certificate, or one from another CA, is refused at the handshake.
        for credentials in (_client(cluster, None), _client(other, "intruder", ca_dir=cluster)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _ping(port, credentials)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A client that trusts another CA refuses the control plane.
        with pytest.raises(grpc.aio.AioRpcError):
            await _ping(port, _client(other, "intruder"))
    finally:
        await server.stop(0)


def test_files_roles_and_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    issued = pki.init(directory, hosts=["cp.internal", "10.0.0.5"], now=NOW)
    dp = pki.issue_dataplane(directory, name="edge-7", now=NOW)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for key in (directory / pki.CA_KEY, issued.key_path, dp.key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pki.certificate_role(issued.cert_path.read_bytes()) is pki.Role.CONTROLPLANE
    assert pki.certificate_role(dp.cert_path.read_bytes()) is pki.Role.DATAPLANE
    assert pki.certificate_role((directory / pki.CA_CERT).read_bytes()) is None


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        pki.issue_dataplane(tmp_path / "missing", name="dp", now=NOW)
    directory = tmp_path / "pki"
    pki.init(directory, hosts=["localhost"], now=NOW)
    ca_before = (directory / pki.CA_CERT).read_bytes()
    with pytest.raises(AlreadyExists):
        pki.init(directory, hosts=["localhost"], now=NOW)
    with pytest.raises(InvalidArgument):
        pki.issue_dataplane(directory, name="../escape", now=NOW)
    with pytest.raises(InvalidArgument):
        pki.init(tmp_path / "nohosts", hosts=[], now=NOW)
    assert (directory / pki.CA_CERT).read_bytes() == ca_before


def test_cli(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = meterline("pki", "init", "--dir", str(directory), "--host", "127.0.0.1")
    assert first.returncode == 0, first.stderr
    assert "controlplane.crt" in first.stdout
    dp = meterline("pki", "issue-dataplane", "dp-9", "--dir", str(directory))
    assert dp.returncode == 0 and (directory / "dp-9.crt").exists()
    again = meterline("pki", "init", "--dir", str(directory))
    assert again.returncode == 1 and "--force" in again.stdout
    # An init job run again (compose, Kubernetes) keeps the CA it made the first time.
    ca = (directory / pki.CA_CERT).read_bytes()
    kept = meterline("pki", "init", "--dir", str(directory), "--exist-ok")
    assert kept.returncode == 0 and "kept" in kept.stdout
    assert (directory / pki.CA_CERT).read_bytes() == ca
