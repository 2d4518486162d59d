"""``--cp`` and the cluster flags of a data plane: gRPC targets, TLS name, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.config.cluster import ClusterConfigError, ClusterTLS, channel_target


@pytest.mark.parametrize(
    ("cp", "target", "server_name"),
    [
        pytest.param("cp.internal:50052", "cp.internal:50052", "cp.internal", id="one-name"),
        pytest.param("127.0.0.1:50052", "127.0.0.1:50052", "127.0.0.1", id="one-ip"),
        pytest.param(
            "10.0.0.5:50052, 10.0.0.6:50052",
            "ipv4:10.0.0.5:50052,10.0.0.6:50052",
            "10.0.0.5",
            id="replicas-v4",
        ),
        pytest.param("[::1]:1,[::2]:2", "ipv6:[::1]:1,[::2]:2", "::1", id="replicas-v6"),
    ],
)
def test_targets(cp: str, target: str, server_name: str) -> None:
    assert channel_target(cp) == (target, server_name)


@pytest.mark.parametrize(
    ("cp", "message"),
    [
        pytest.param("", "no control plane address", id="empty"),
        pytest.param("cp.internal", "HOST:PORT", id="no-port"),
        pytest.param("a.internal:1,b.internal:2", "IP literals", id="names"),
        pytest.param("10.0.0.5:1,[::1]:2", "IPv4 and IPv6", id="mixed"),
    ],
)
def test_bad_targets(cp: str, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        channel_target(cp)


def test_tls_flags_all_or_dev(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("dp.crt", "dp.key", "ca.crt")}
    for path in files.values():
        path.write_bytes(b"pem of " + path.name.encode())
    tls = ClusterTLS.from_files(
        cert=files["dp.crt"], key=files["dp.key"], ca=files["ca.crt"], insecure_dev=False
    )
    assert tls == ClusterTLS(cert=b"pem of dp.crt", key=b"pem of dp.key", ca=b"pem of ca.crt")
    assert ClusterTLS.from_files(cert=None, key=None, ca=None, insecure_dev=True) is None
    with pytest.raises(ClusterConfigError, match="--cluster-cert, --cluster-key, --cluster-ca"):
        ClusterTLS.from_files(cert=None, key=None, ca=None, insecure_dev=False)
    with pytest.raises(ClusterConfigError, match="--cluster-ca"):
        ClusterTLS.from_files(cert=files["dp.crt"], key=files["dp.key"], ca=None, insecure_dev=True)
    with pytest.raises(ClusterConfigError, match="cannot read"):
        ClusterTLS.from_files(
            cert=tmp_path / "missing.crt",
            key=files["dp.key"],
            ca=files["ca.crt"],
            insecure_dev=False,
        )
