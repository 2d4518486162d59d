"""Operator-side gRPC client: stubs over one channel, errors as readable messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
class AdminClient:
    gateway: gateway_pb2_grpc.GatewayServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    customers: customers_pb2_grpc.CustomerServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    usage: usage_pb2_grpc.UsageServiceStub


@contextmanager
def admin_client(address: str, *, wait_seconds: float = 10.0) -> Iterator[AdminClient]:
    """Stubs of every operator service on one channel to the control plane."""
    with grpc.insecure_channel(address) as channel:
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
