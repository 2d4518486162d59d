"""Operator-side gRPC client: stubs over one channel, errors as readable messages.

Every command sends the operator token (``--token`` before the command, or
``$METERLINE_TOKEN``) as ``authorization: Bearer ...``, and speaks TLS when given the CA that
signed the control plane's certificate (``--ca-file`` or ``$METERLINE_CA_FILE``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meterline.admin.v1 import (
    billing_pb2_grpc,
    catalog_pb2_grpc,
    customers_pb2_grpc,
    gateway_pb2_grpc,
    usage_pb2_grpc,
)

DEFAULT_CP = "127.0.0.1:50051"


def default_cp() -> str:
    return os.environ.get("METERLINE_CP", DEFAULT_CP)


@dataclass(frozen=True)
class OperatorCredentials:
    """What the CLI presents to the operator listener."""

    token: str | None = None
    ca_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorCredentials:
        environ = os.environ if environ is None else environ
        ca = environ.get("METERLINE_CA_FILE")
        return cls(token=environ.get("METERLINE_TOKEN") or None, ca_file=Path(ca) if ca else None)


# Set once per command by ``configure`` (the CLI's flags); None: the environment's.
_configured: OperatorCredentials | None = None


def add_cp_argument(parser: argparse.ArgumentParser) -> None:
    """``--cp HOST:PORT``, the control plane an operator command talks to."""
    parser.add_argument(
        "--cp",
        default=default_cp(),
        metavar="HOST:PORT",
        help="control plane gRPC address (default: $METERLINE_CP or %(default)s)",
    )


def configure(*, token: str | None, ca_file: Path | None) -> None:
    """The credentials of this CLI invocation: flags first, then the environment."""
    global _configured
    env = OperatorCredentials.from_env()
    _configured = OperatorCredentials(token=token or env.token, ca_file=ca_file or env.ca_file)


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._details(details), requests)


def operator_channel(address: str, credentials: OperatorCredentials | None = None) -> grpc.Channel:
    """A channel to the operator listener carrying the token (TLS with a CA file)."""
    creds = credentials or _configured or OperatorCredentials.from_env()
    if creds.ca_file is not None:
        try:
            root = creds.ca_file.read_bytes()
        except OSError as exc:
            raise SystemExit(f"error: --ca-file: {exc}") from None
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root))
    else:
        channel = grpc.insecure_channel(address)
    if creds.token:
        return grpc.intercept_channel(channel, _BearerToken(creds.token))
    return channel


@dataclass(frozen=True)
class AdminClient:
    gateway: gateway_pb2_grpc.GatewayServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    customers: customers_pb2_grpc.CustomerServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    usage: usage_pb2_grpc.UsageServiceStub


@contextmanager
def admin_client(
    address: str,
    *,
    wait_seconds: float = 10.0,
    credentials: OperatorCredentials | None = None,
) -> Iterator[AdminClient]:
    """Stubs of every operator service on one channel to the control plane."""
    with operator_channel(address, credentials) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=wait_seconds)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"error: no control plane answers at {address}") from None
        yield AdminClient(
            gateway=gateway_pb2_grpc.GatewayServiceStub(channel),
            catalog=catalog_pb2_grpc.CatalogServiceStub(channel),
            customers=customers_pb2_grpc.CustomerServiceStub(channel),
            billing=billing_pb2_grpc.BillingServiceStub(channel),
            usage=usage_pb2_grpc.UsageServiceStub(channel),
        )
