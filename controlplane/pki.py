"""A private PKI for the control-plane/data-plane link (Kong's "pki" cluster mode).

``init`` creates a CA and the control plane's server certificate; ``issue_dataplane`` creates a
client certificate for one data plane. Every certificate names its role in the subject's
organizational unit ("controlplane" or "dataplane"), so the control plane can refuse a
certificate of the wrong role even when the CA signed it. Keys are EC P-256, written 0600.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.errors import AlreadyExists, InvalidArgument, NotFound

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "controlplane.crt"
SERVER_KEY = "controlplane.key"


class Role(StrEnum):
    CONTROLPLANE = "controlplane"
    DATAPLANE = "dataplane"


@dataclass(frozen=True)
class IssuedCertificate:
    cert_path: Path
    key_path: Path
    not_after: datetime


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Create with the final mode so a private key is never readable by others, even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, role: Role | None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meterline"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if role is not None:
        attributes.insert(1, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value))
    return x509.Name(attributes)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError:
        raise NotFound(f"no CA in {directory}; run `meterline pki init` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{directory / CA_KEY} is not an EC private key")
    return cert, key


def _issue(
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    role: Role,
    hosts: list[str],
    now: datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = (
        ExtendedKeyUsageOID.SERVER_AUTH
        if role is Role.CONTROLPLANE
        else (ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def init(
    directory: Path, *, hosts: list[str], now: datetime, days: int = 825, force: bool = False
) -> IssuedCertificate:
    """Create a CA and the control plane's server certificate (for ``hosts``) in ``directory``."""
    if not hosts:
        raise InvalidArgument("at least one --host is needed for the control plane certificate")
    if (directory / CA_KEY).exists() and not force:
        raise AlreadyExists(f"{directory / CA_KEY} exists; pass --force to replace the whole PKI")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Meterline cluster CA", None)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days * 4))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_bytes(ca_key), private=True)
    _write(directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    cert, key = _issue(
        ca_cert=ca_cert,
        ca_key=ca_key,
        common_name="meterline-controlplane",
        role=Role.CONTROLPLANE,
        hosts=hosts,
        now=now,
        days=days,
    )
    _write(directory / SERVER_KEY, _key_bytes(key), private=True)
    _write(directory / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return IssuedCertificate(
        directory / SERVER_CERT, directory / SERVER_KEY, cert.not_valid_after_utc
    )


def issue_dataplane(
    directory: Path, *, name: str, now: datetime, days: int = 365
) -> IssuedCertificate:
    """Create a client certificate for one data plane, signed by the CA in ``directory``."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidArgument(f"invalid data plane name {name!r}")
    ca_cert, ca_key = _load_ca(directory)
    cert, key = _issue(
        ca_cert=ca_cert,
        ca_key=ca_key,
        common_name=name,
        role=Role.DATAPLANE,
        hosts=[],
        now=now,
        days=days,
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    _write(key_path, _key_bytes(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return IssuedCertificate(cert_path, key_path, cert.not_valid_after_utc)


def certificate_role(pem: bytes) -> Role | None:
    """The role a certificate names in its organizational unit, if any."""
    cert = x509.load_pem_x509_certificate(pem)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    for unit in units:
        value = unit.value if isinstance(unit.value, str) else unit.value.decode()
        if value in Role.__members__.values():
            return Role(value)
    return None
