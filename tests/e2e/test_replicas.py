"""Two control-plane replicas over one PostgreSQL: a change made through one reaches a data
plane connected to the other, and the time it takes is measured."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from support.documents import gateway_document
from support.processes import free_port, http_ready, meterline, wait_until

# Each replica re-reads the gateway config every 2 s (ConfigHub's poll), then pushes.
PROPAGATION_BOUND_S = 5.0


@pytest.mark.postgres
def test_a_change_through_one_replica_reaches_a_data_plane_of_the_other(
    processes, pg_url: str, tmp_path: Path
) -> None:
    fake_port, cp_a, cp_b, dp_port = free_port(), free_port(), free_port(), free_port()
    processes.start(
        "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{fake_port}"
    )
    for name, port in (("cp-a", cp_a), ("cp-b", cp_b)):
        processes.start(
            name,
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            pg_url,
            "--listen",
            f"127.0.0.1:{port}",
        )
    config = tmp_path / "gateway.yaml"

    def write(*names: str) -> None:
        config.write_text(
            gateway_document(
                f"http://127.0.0.1:{fake_port}",
                {name: f"{name}-key-0123" for name in names},
                provider_key="sk-replicas",
            )
        )

    write("alice")
    applied = meterline("apply", str(config), "--cp", f"127.0.0.1:{cp_a}")
    assert applied.returncode == 0, applied.stderr + processes.logs()

    # The data plane talks to replica B only.
    processes.start(
        "dp",
        "-m",
        "controlplane",
        "dataplane",
        "--cp",
        f"127.0.0.1:{cp_b}",
        "--listen",
        f"127.0.0.1:{dp_port}",
    )
    url = f"http://127.0.0.1:{dp_port}/chat/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    def status(key: str) -> int:
        return httpx.post(url, json=body, headers={"apikey": key}, timeout=5).status_code

    wait_until(lambda: http_ready(f"http://127.0.0.1:{dp_port}/nope", {404}), what="data plane")
    wait_until(lambda: status("alice-key-0123") == 200, what="alice served via replica B")
    assert status("bob-key-0123") == 401

    # When bob is added through replica A...
    write("alice", "bob")
    started = time.monotonic()
    applied = meterline("apply", str(config), "--cp", f"127.0.0.1:{cp_a}")
    assert applied.returncode == 0, applied.stderr
    # ...the data plane connected to replica B accepts bob's key within the bound.
    wait_until(lambda: status("bob-key-0123") == 200, timeout=PROPAGATION_BOUND_S * 2, what="bob")
    elapsed = time.monotonic() - started
    print(f"\nconfig propagation across replicas: {elapsed:.2f} s (incl. the CLI's apply)")
    assert elapsed < PROPAGATION_BOUND_S
