"""deploy/local/: the production topology as processes, on the machine's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import openai
import pytest

from meterline.admin.v1 import usage_pb2, usage_pb2_grpc
from support.documents import gateway_document
from support.processes import free_port, meterline, wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = "local-topology-key"


@pytest.mark.postgres
def test_local_topology_comes_up_serves_through_each_data_plane_and_goes_down(
    pg_url: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cp_port, cluster_port, fake_port = free_port(), free_port(), free_port()
    dp_ports = [free_port() for _ in range(3)]
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "CP_PORT": str(cp_port),
        "CLUSTER_PORT": str(cluster_port),
        "DP_PORTS": " ".join(map(str, dp_ports)),
        "FAKE_PORT": str(fake_port),
        "PYTHON": sys.executable,
    }
    up = subprocess.run(
        ["bash", str(ROOT / "deploy/local/up.sh"), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{cp_port}" in up.stdout
        pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
        assert set(pids) == {"fake", "controlplane", "dataplane-1", "dataplane-2", "dataplane-3"}

        config = tmp_path / "config.yaml"
        config.write_text(
            gateway_document(
                f"http://127.0.0.1:{fake_port}", {"team-a": KEY}, provider_key="sk-local"
            )
        )
        cp = f"127.0.0.1:{cp_port}"
        # The data planes sync over mutual TLS; the operator API wants the admin token.
        token = (run_dir / "admin.token").read_text().strip()
        assert meterline("apply", str(config), "--cp", cp).returncode == 1
        applied = meterline("apply", str(config), "--cp", cp, env={"METERLINE_TOKEN": token})
        assert applied.returncode == 0, applied.stderr

        # Each data plane gets the new config and serves a metered request.
        reported = 0
        for port in dp_ports:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/chat", api_key=KEY, max_retries=0
            )

            def served(client: openai.OpenAI = client) -> bool:
                try:
                    response = client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping pong"}]
                    )
                except openai.AuthenticationError:
                    return False  # the data plane does not hold the new config yet
                nonlocal reported
                reported += response.usage.total_tokens
                return True

            wait_until(served, timeout=15, what=f"data plane on {port} to serve")

        with grpc.insecure_channel(cp) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)

            def events() -> list[usage_pb2.UsageEvent]:
                request = usage_pb2.ListUsageEventsRequest(subject="team-a")
                auth = (("authorization", f"Bearer {token}"),)
                return list(stub.ListUsageEvents(request, metadata=auth).usage_events)

            wait_until(lambda: len(events()) >= 6, what="usage of 3 requests")
            stored = events()
        assert {e.source for e in stored} == {f"local-dataplane-{i}" for i in (1, 2, 3)}
        assert sum(e.value for e in stored) == reported
    finally:
        down = subprocess.run(
            ["bash", str(ROOT / "deploy/local/down.sh"), str(run_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert list(run_dir.glob("*.pid")) == []


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
