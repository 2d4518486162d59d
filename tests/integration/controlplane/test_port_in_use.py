"""A control plane refuses to start on a port another one holds (no SO_REUSEPORT sharing)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from meterline.admin.v1 import customers_pb2, customers_pb2_grpc
from tests.support.processes import DEV_ENV


async def test_second_in_process_control_plane_on_a_taken_port_refuses(tmp_path: Path) -> None:
    # Given: a control plane serving on a port, over its own database
    first_db = Database.connect(f"sqlite:///{tmp_path / 'first.db'}")
    second_db = Database.connect(f"sqlite:///{tmp_path / 'second.db'}")
    first = ControlPlane(db=first_db, listen="127.0.0.1:0")
    port = await first.start()
    try:
        # When: a second one, over another database, is started on the same port
        second = ControlPlane(db=second_db, listen=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await second.start()
        # Then: every call still reaches the first one (its database answers)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = customers_pb2_grpc.CustomerServiceStub(channel)
            for i in range(4):
                await stub.CreateCustomer(
                    customers_pb2.CreateCustomerRequest(
                        customer=customers_pb2.Customer(key=f"c{i}", subjects=[f"s{i}"])
                    )
                )
            listed = await stub.ListCustomers(customers_pb2.ListCustomersRequest())
        assert [c.key for c in listed.customers] == ["c0", "c1", "c2", "c3"]
    finally:
        await first.stop(0)
        await asyncio.get_running_loop().shutdown_default_executor()
        first_db.dispose()
        second_db.dispose()


async def test_second_control_plane_process_on_a_taken_port_exits_with_one_line(
    tmp_path: Path,
) -> None:
    # Given: a control plane holding a port
    db = Database.connect(f"sqlite:///{tmp_path / 'first.db'}")
    first = ControlPlane(db=db, listen="127.0.0.1:0")
    port = await first.start()
    try:
        # When: `meterline controlplane` is started on the same port
        run = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "controlplane",
                "controlplane",
                "--db",
                f"sqlite:///{tmp_path / 'second.db'}",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **DEV_ENV},
        )
    finally:
        await first.stop(0)
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()
    # Then: it exits non-zero with one clear error line, and never says it is listening
    assert run.returncode != 0
    assert "listening" not in run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: the address is in use or not available"
    ]
