"""The data plane's side of the cluster link: one gRPC channel to the control plane(s).

Outside development the link is mutual TLS: the data plane presents its certificate (from
``meterline pki issue-dataplane``) and trusts only the Meterline CA. ``--cp`` may name several
control-plane replicas (``10.0.0.5:50052,10.0.0.6:50052``, IP literals): the channel uses the
first that answers and moves to another when it goes away (gRPC pick_first over an address
list). One DNS name may also resolve to several replicas (a headless Kubernetes Service).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

from dataplane.errors import ConfigError


class ClusterConfigError(ConfigError):
    """The cluster flags are missing or unusable."""


@dataclass(frozen=True)
class ClusterTLS:
    """The data plane's certificate, its key, and the CA that signs the control plane's."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_files(
        cls, *, cert: Path | None, key: Path | None, ca: Path | None, insecure_dev: bool
    ) -> ClusterTLS | None:
        """The TLS settings from the flags; None only with ``insecure_dev``."""
        given = {"--cluster-cert": cert, "--cluster-key": key, "--cluster-ca": ca}
        if insecure_dev and not any(given.values()):
            return None
        missing = [flag for flag, value in given.items() if value is None]
        if missing:
            raise ClusterConfigError(
                f"missing {', '.join(missing)}: the link to the control plane is mutual TLS "
                "(`meterline pki issue-dataplane NAME`); --insecure-dev allows plaintext"
            )
        assert cert and key and ca
        try:
            return cls(cert=cert.read_bytes(), key=key.read_bytes(), ca=ca.read_bytes())
        except OSError as exc:
            raise ClusterConfigError(f"cannot read a cluster TLS file: {exc}") from None


def _split(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClusterConfigError(f"--cp: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), port


def channel_target(cp: str) -> tuple[str, str]:
    """The gRPC target for ``--cp`` and the host name TLS checks the certificate against."""
    addresses = [a.strip() for a in cp.split(",") if a.strip()]
    if not addresses:
        raise ClusterConfigError("--cp: no control plane address")
    hosts = [_split(a) for a in addresses]
    if len(addresses) == 1:
        return addresses[0], hosts[0][0]
    families = set()
    for host, _ in hosts:
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ClusterConfigError(
                f"--cp: several addresses must be IP literals ({host!r} is not); "
                "use one DNS name that resolves to every replica instead"
            ) from None
    if len(families) > 1:
        raise ClusterConfigError("--cp: mix of IPv4 and IPv6 addresses")
    scheme = "ipv4" if families == {4} else "ipv6"
    listed = ",".join(f"[{h}]:{p}" if scheme == "ipv6" else f"{h}:{p}" for h, p in hosts)
    return f"{scheme}:{listed}", hosts[0][0]


def open_channel(cp: str, tls: ClusterTLS | None) -> grpc.aio.Channel:
    """One channel (one HTTP/2 connection) for the config and the usage stream."""
    target, server_name = channel_target(cp)
    options: list[tuple[str, str | int]] = [
        # A dead control plane is noticed within ~30 s even when no stream has data to send.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if target != cp.strip():
        # An address list has no single authority: check the certificate against the first.
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    return grpc.aio.secure_channel(target, credentials, options=options)
