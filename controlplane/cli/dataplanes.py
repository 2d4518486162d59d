"""``meterline dataplanes list``: the data-plane registry, as an operator reads it."""

from __future__ import annotations

import argparse
from datetime import UTC
from typing import Any

from controlplane.cli.client import add_cp_argument, ready_channel
from controlplane.cli.output import Column, add_output_arguments, emit_list, rfc3339
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc

_COLUMNS = (
    Column("node_id"),
    Column("hostname"),
    Column("version"),
    Column("config_version"),
    Column("status"),
    Column("last_seen", time=True),
    Column("error"),
)


def register(subparsers: Any) -> None:
    """Add ``dataplanes list`` to the ``meterline`` subcommands."""
    dataplanes = subparsers.add_parser("dataplanes", help="data planes known to the control plane")
    commands = dataplanes.add_subparsers(dest="dataplanes_command", required=True)
    listing = commands.add_parser("list", help="list data planes and their sync status")
    add_output_arguments(listing)
    add_cp_argument(listing)
    listing.set_defaults(func=_cmd_list)


def _status(value: int) -> str:
    return dataplanes_pb2.SyncStatus.Name(value).removeprefix("SYNC_STATUS_").lower()


def _fetch(address: str) -> list[dataplanes_pb2.DataPlane]:
    with ready_channel(address) as channel:
        stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)
        found: list[dataplanes_pb2.DataPlane] = []
        token = ""
        while True:
            response = stub.ListDataPlanes(
                dataplanes_pb2.ListDataPlanesRequest(page_size=1000, page_token=token)
            )
            found.extend(response.data_planes)
            token = response.next_page_token
            if not token:
                return found


def _cmd_list(args: argparse.Namespace) -> int:
    planes = _fetch(args.cp)
    rows = [
        {
            "node_id": p.node_id,
            "hostname": p.hostname,
            "version": p.version,
            "config_version": p.config_version,
            "status": _status(p.sync_status),
            "last_seen": rfc3339(p.last_seen_time.ToDatetime(tzinfo=UTC))
            if p.HasField("last_seen_time")
            else "",
            "error": p.error,
        }
        for p in planes
    ]
    emit_list(args, rows, _COLUMNS, noun=("data plane", "data planes"))
    return 0
