"""Trust on the wire, as an operator sees it: data planes by certificate on the cluster
listener (mTLS), operators by bearer token on the operator listener, and neither credential
opens the other's door."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import openai
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane import pki
from controlplane.api.auth import Scope, add_token
from controlplane.cli.main import main
from meterline.admin.v1 import gateway_pb2, gateway_pb2_grpc, usage_pb2, usage_pb2_grpc
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc
from support.documents import gateway_document
from support.processes import Processes, free_port, http_ready, meterline, wait_until

NOW = datetime.now(UTC)
KEY = "trust-consumer-key"


@dataclass
class Cluster:
    pki: Path
    operator: str  # the operator listener (TLS with the cluster certificate)
    cluster: str  # the cluster listener (mutual TLS)
    admin: str
    reader: str
    fake_port: int
    dp_port: int

    def cli(self, *args: str, token: str | None = None) -> tuple[int, str]:
        flags = ["--ca-file", str(self.pki / pki.CA_CERT)]
        if token:
            flags += ["--token", token]
        result = meterline(*flags, *args)
        return result.returncode, result.stdout + result.stderr


def _client_cert(directory: Path, *, name: str, unit: str) -> tuple[bytes, bytes]:
    """A client certificate signed by the cluster CA whose role (OU) is ``unit``."""
    ca_cert = x509.load_pem_x509_certificate((directory / pki.CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((directory / pki.CA_KEY).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meterline"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


@pytest.fixture
def cluster(processes: Processes, tmp_path: Path) -> Iterator[Cluster]:
    directory = tmp_path / "pki"
    pki.init(directory, hosts=["127.0.0.1", "localhost"], now=NOW)
    dp = pki.issue_dataplane(directory, name="edge-1", now=NOW)
    tokens = tmp_path / "tokens.yaml"
    admin = add_token(tokens, name="ops", scope=Scope.ADMIN)
    reader = add_token(tokens, name="grafana", scope=Scope.READ)
    secrets_key = tmp_path / "secrets.key"
    secrets_key.write_bytes(Fernet.generate_key())
    fake_port, op_port, cl_port, dp_port = (free_port() for _ in range(4))
    processes.start(
        "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{fake_port}"
    )
    processes.start(
        "cp",
        "-m",
        "controlplane",
        "controlplane",
        "--db",
        f"sqlite:///{tmp_path / 'cp.db'}",
        "--listen",
        f"127.0.0.1:{op_port}",
        "--cluster-listen",
        f"127.0.0.1:{cl_port}",
        "--tokens-file",
        str(tokens),
        "--cluster-cert",
        str(directory / pki.SERVER_CERT),
        "--cluster-key",
        str(directory / pki.SERVER_KEY),
        "--cluster-ca",
        str(directory / pki.CA_CERT),
        "--operator-tls",
        "--secrets-key-file",
        str(secrets_key),
        insecure_dev=False,
    )
    processes.start(
        "dp",
        "-m",
        "controlplane",
        "dataplane",
        "--cp",
        f"127.0.0.1:{cl_port}",
        "--listen",
        f"127.0.0.1:{dp_port}",
        "--node-id",
        "edge-1",
        "--usage-flush-ms",
        "50",
        "--cluster-cert",
        str(dp.cert_path),
        "--cluster-key",
        str(dp.key_path),
        "--cluster-ca",
        str(directory / pki.CA_CERT),
        insecure_dev=False,
    )
    yield Cluster(
        pki=directory,
        operator=f"127.0.0.1:{op_port}",
        cluster=f"127.0.0.1:{cl_port}",
        admin=admin,
        reader=reader,
        fake_port=fake_port,
        dp_port=dp_port,
    )


def _tls(directory: Path, cert_and_key: tuple[bytes, bytes] | None) -> grpc.ChannelCredentials:
    ca = (directory / pki.CA_CERT).read_bytes()
    if cert_and_key is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    cert, key = cert_and_key
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def _open_config_stream(
    address: str,
    credentials: grpc.ChannelCredentials,
    token: str | None = None,
    node: str = "intruder",
) -> grpc.StatusCode | None:
    """Open StreamConfig as ``node``; the status it ends with (None: a snapshot came)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.secure_channel(address, credentials) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        first = config_pb2.ConfigRequest(node=config_pb2.Node(id=node))
        try:
            for _ in stub.StreamConfig(iter([first]), metadata=metadata, timeout=5):
                return None
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_certified_data_plane_syncs_and_reports_and_nothing_else_gets_in(
    cluster: Cluster, processes: Processes, tmp_path: Path
) -> None:
    # Given a control plane with mTLS on the cluster listener and tokens on the operator one
    wait_until(
        lambda: http_ready(f"http://127.0.0.1:{cluster.fake_port}/_fake/requests", {200}),
        what="fake",
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(
        gateway_document(
            f"http://127.0.0.1:{cluster.fake_port}", {"team-trust": KEY}, provider_key="sk-trust"
        )
    )

    # An operator with a read-only token cannot change anything.
    code, out = cluster.cli("apply", str(config), "--cp", cluster.operator, token=cluster.reader)
    assert code == 1 and "PERMISSION_DENIED" in out and "needs admin" in out, out + processes.logs()
    # The admin token applies the config (TLS to the operator listener, trusting the CA).
    code, out = cluster.cli("apply", str(config), "--cp", cluster.operator, token=cluster.admin)
    assert code == 0, out + processes.logs()

    # The data plane, holding a certificate of the cluster CA, syncs the config over mTLS...
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{cluster.dp_port}/chat", api_key=KEY, max_retries=0
    )
    reported = 0

    def served() -> bool:
        nonlocal reported
        try:
            response = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}]
            )
        except (openai.AuthenticationError, openai.APIConnectionError, openai.APIStatusError):
            return False
        assert response.usage is not None
        reported += response.usage.total_tokens
        return True

    wait_until(served, timeout=20, what="the data plane to serve over its synced config")
    # ...and its usage arrives over the same link, readable with the read-only token.
    auth = (("authorization", f"Bearer {cluster.reader}"),)
    with grpc.secure_channel(cluster.operator, _tls(cluster.pki, None)) as channel:
        usage = usage_pb2_grpc.UsageServiceStub(channel)

        def stored() -> int:
            request = usage_pb2.ListUsageEventsRequest(subject="team-trust")
            return sum(e.value for e in usage.ListUsageEvents(request, metadata=auth).usage_events)

        wait_until(lambda: stored() == reported, timeout=10, what="usage over mTLS")
        # Without a token, or with a wrong one, not even reads.
        for metadata in (None, (("authorization", "Bearer mlt_not-a-token"),)):
            with pytest.raises(grpc.RpcError) as unauthenticated:
                usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest(), metadata=metadata)
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The read-only token may not mutate through the API either.
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document="{}"), metadata=auth)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # An operator token opens no data-plane stream on the operator listener.
        config_stub = config_pb2_grpc.ConfigServiceStub(channel)
        first = config_pb2.ConfigRequest(node=config_pb2.Node(id="intruder"))
        admin = (("authorization", f"Bearer {cluster.admin}"),)
        with pytest.raises(grpc.RpcError) as unimplemented:
            next(iter(config_stub.StreamConfig(iter([first]), metadata=admin, timeout=5)))
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # The cluster listener: a data-plane certificate gets a snapshot...
    dp_cert = (
        (cluster.pki / "edge-1.crt").read_bytes(),
        (cluster.pki / "edge-1.key").read_bytes(),
    )
    assert _open_config_stream(cluster.cluster, _tls(cluster.pki, dp_cert), node="probe") is None
    # ...while no certificate (even with the admin token), a certificate of another CA, or one
    # of this CA with another role are refused.
    other = tmp_path / "other"
    pki.init(other, hosts=["127.0.0.1"], now=NOW)
    foreign = pki.issue_dataplane(other, name="edge-1", now=NOW)
    foreign_cert = (foreign.cert_path.read_bytes(), foreign.key_path.read_bytes())
    server_cert = (
        (cluster.pki / pki.SERVER_CERT).read_bytes(),
        (cluster.pki / pki.SERVER_KEY).read_bytes(),
    )
    operator_role = _client_cert(cluster.pki, name="ops-laptop", unit="controlplane")
    no_role = _client_cert(cluster.pki, name="unlabelled", unit="billing")
    refusals = {
        "no certificate, admin token": _open_config_stream(
            cluster.cluster, _tls(cluster.pki, None), token=cluster.admin
        ),
        "another CA": _open_config_stream(cluster.cluster, _tls(cluster.pki, foreign_cert)),
        "control plane's server certificate": _open_config_stream(
            cluster.cluster, _tls(cluster.pki, server_cert)
        ),
        "operator role": _open_config_stream(cluster.cluster, _tls(cluster.pki, operator_role)),
        "no role": _open_config_stream(cluster.cluster, _tls(cluster.pki, no_role)),
    }
    assert refusals == {
        "no certificate, admin token": grpc.StatusCode.UNAVAILABLE,  # TLS handshake
        "another CA": grpc.StatusCode.UNAVAILABLE,
        "control plane's server certificate": grpc.StatusCode.UNAVAILABLE,  # not a client cert
        "operator role": grpc.StatusCode.PERMISSION_DENIED,
        "no role": grpc.StatusCode.PERMISSION_DENIED,
    }
    # A data-plane certificate calls no operator API: not served on the cluster listener...
    with grpc.secure_channel(cluster.cluster, _tls(cluster.pki, dp_cert)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            usage_pb2_grpc.UsageServiceStub(channel).ListUsageEvents(
                usage_pb2.ListUsageEventsRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ...and worth nothing on the operator listener without a token.
    with grpc.secure_channel(cluster.operator, _tls(cluster.pki, dp_cert)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            usage_pb2_grpc.UsageServiceStub(channel).ListUsageEvents(
                usage_pb2.ListUsageEventsRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The refused nodes never made it into the registry.
    code, out = cluster.cli(
        "dataplanes", "list", "--json", "--cp", cluster.operator, token=cluster.reader
    )
    assert code == 0 and '"edge-1"' in out and '"probe"' in out and "intruder" not in out, out


def test_plaintext_needs_the_explicit_dev_flag(tmp_path: Path, capsys, monkeypatch) -> None:
    # The control plane refuses before it touches anything (in-process: argument checks only).
    for variable in ("METERLINE_CONTROLPLANE_INSECURE_DEV", "METERLINE_SECRETS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    assert main(["controlplane", *db]) == 2
    refused = capsys.readouterr().err
    assert "--tokens-file" in refused and "--insecure-dev" in refused
    # A tokens file with no tokens would lock every operator out: refused at start.
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: []\n")
    directory = tmp_path / "pki"
    pki.init(directory, hosts=["127.0.0.1"], now=NOW)
    flags = [
        *db,
        "--tokens-file",
        str(tokens),
        "--cluster-cert",
        str(directory / pki.SERVER_CERT),
        "--cluster-key",
        str(directory / pki.SERVER_KEY),
        "--cluster-ca",
        str(directory / pki.CA_CERT),
    ]
    assert main(["controlplane", *flags]) == 2
    assert "no tokens" in capsys.readouterr().err
    # Nor does it start without a key for the provider keys it stores.
    add_token(tokens, name="ops", scope=Scope.ADMIN)
    assert main(["controlplane", *flags]) == 2
    assert "no secrets key" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()

    # A data plane refuses to start without its certificate, as a process.
    env = {"METERLINE_DATAPLANE_INSECURE_DEV": "0"}
    dp = meterline("dataplane", "--cp", "127.0.0.1:1", "--listen", "127.0.0.1:0", env=env)
    assert dp.returncode == 2
    assert "--cluster-cert" in dp.stderr and "--insecure-dev" in dp.stderr
    # Half a certificate is refused too, dev flag or not.
    half = meterline(
        "dataplane", "--cp", "127.0.0.1:1", "--cluster-cert", "x.crt", "--insecure-dev", env=env
    )
    assert half.returncode == 2 and "--cluster-key" in half.stderr
