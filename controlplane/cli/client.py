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
# Seconds to wait for the control plane to answer before saying it does not: long enough for a
# remote one over TLS, short enough that a stopped one is reported before the user wonders.
DEFAULT_CONNECT_TIMEOUT = 2.0


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
_connect_timeout: float | None = None


def add_cp_argument(parser: argparse.ArgumentParser) -> None:
    """``--cp HOST:PORT``, the control plane an operator command talks to."""
    parser.add_argument(
        "--cp",
        default=default_cp(),
        metavar="HOST:PORT",
        help="control plane gRPC address (default: $METERLINE_CP or %(default)s)",
    )


def configure(
    *, token: str | None, ca_file: Path | None, connect_timeout: float | None = None
) -> None:
    """The credentials of this CLI invocation: flags first, then the environment."""
    global _configured, _connect_timeout
    env = OperatorCredentials.from_env()
    _configured = OperatorCredentials(token=token or env.token, ca_file=ca_file or env.ca_file)
    _connect_timeout = connect_timeout


def connect_timeout() -> float:
    """Seconds to wait for the control plane: --connect-timeout, $METERLINE_CONNECT_TIMEOUT, 2."""
    if _connect_timeout is not None:
        return _connect_timeout
    text = os.environ.get("METERLINE_CONNECT_TIMEOUT")
    try:
        return float(text) if text else DEFAULT_CONNECT_TIMEOUT
    except ValueError:
        raise SystemExit(f"error: METERLINE_CONNECT_TIMEOUT={text!r} is not a number") from None


class Unreachable(SystemExit):
    """No control plane answered in time: one line on stderr, exit status 1."""

    def __init__(self, address: str, seconds: float) -> None:
        super().__init__(
            f"error: no control plane answers at {address} (waited {seconds:g}s); start one with"
            " `meterline controlplane`, or point --cp / $METERLINE_CP at it"
        )


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
def ready_channel(
    address: str,
    *,
    wait_seconds: float | None = None,
    credentials: OperatorCredentials | None = None,
) -> Iterator[grpc.Channel]:
    """A channel to the control plane once it answers; ``Unreachable`` if it does not in time
    (``wait_seconds``, default ``connect_timeout()``)."""
    seconds = connect_timeout() if wait_seconds is None else wait_seconds
    with operator_channel(address, credentials) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=seconds)
        except grpc.FutureTimeoutError:
            raise Unreachable(address, seconds) from None
        yield channel


@contextmanager
def admin_client(
    address: str,
    *,
    wait_seconds: float | None = None,
    credentials: OperatorCredentials | None = None,
) -> Iterator[AdminClient]:
    """Stubs of every operator service on one channel to the control plane."""
    with ready_channel(address, wait_seconds=wait_seconds, credentials=credentials) as channel:
        yield AdminClient(
            gateway=gateway_pb2_grpc.GatewayServiceStub(channel),
            catalog=catalog_pb2_grpc.CatalogServiceStub(channel),
            customers=customers_pb2_grpc.CustomerServiceStub(channel),
            billing=billing_pb2_grpc.BillingServiceStub(channel),
            usage=usage_pb2_grpc.UsageServiceStub(channel),
        )
