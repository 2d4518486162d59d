"""``meterline dataplanes list``: the data-plane registry, as an operator reads it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controlplane.cli.client import add_cp_argument, ready_channel
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc

_COLUMNS = ("NODE ID", "HOSTNAME", "VERSION", "CONFIG VERSION", "STATUS", "LAST SEEN", "ERROR")


def register(subparsers: Any) -> None:
    """Add ``dataplanes list`` to the ``meterline`` subcommands."""
    dataplanes = subparsers.add_parser("dataplanes", help="data planes known to the control plane")
    commands = dataplanes.add_subparsers(dest="dataplanes_command", required=True)
    listing = commands.add_parser("list", help="list data planes and their sync status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(listing)
    listing.set_defaults(func=_cmd_list)


def _status(value: int) -> str:
    return dataplanes_pb2.SyncStatus.Name(value).removeprefix("SYNC_STATUS_").lower()


def _fetch(address: str) -> list[dataplanes_pb2.DataPlane]:
    with ready_channel(address) as channel:
        stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)  # type: ignore[no-untyped-call, unused-ignore]
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
            "last_seen": p.last_seen_time.ToJsonString() if p.HasField("last_seen_time") else "",
            "error": p.error,
        }
        for p in planes
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [_COLUMNS, *([str(v) or "-" for v in row.values()] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0
