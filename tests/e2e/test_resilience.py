"""Fault injection with whole processes: kill -9 the control plane or a data plane under load.

What an operator would see: the gateway keeps serving, and every token the provider reported
is stored exactly once. The loads are bounded (a few hundred requests from a thread pool) and
each phase waits for a count of completed requests, not for time to pass.

Figures these tests assert (DESIGN.md invariants, issue 7):
- control-plane crash: 0 failed requests, 0 events lost, 0 duplicated;
- data-plane crash: every request whose response completed is billed; at most the requests
  in flight at the kill (here at most WORKERS) are lost, and only if the provider answered
  them but the data plane died before recording their usage.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import httpx
import pytest

from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc, usage_pb2, usage_pb2_grpc
from support.documents import gateway_document
from support.processes import (
    Processes,
    free_port,
    grpc_ready,
    http_ready,
    meterline,
    wait_until,
)

KEY = "acme-secret-key"
WORKERS = 8


@dataclass
class Stack:
    """A fake provider and a control plane on ``db_url``; data planes are started per test."""

    processes: Processes
    db_url: str
    tmp: object
    upstream: str
    cp: str
    cp_process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start_cp(self) -> None:
        self.restarts += 1
        self.cp_process = self.processes.start(
            f"cp-{self.restarts}",
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            self.db_url,
            "--listen",
            self.cp,
        )
        wait_until(lambda: grpc_ready(self.cp), timeout=15, what="control plane")

    def kill_cp(self) -> None:
        assert self.cp_process is not None
        self.processes.kill9(self.cp_process)

    def start_dp(self, name: str, *, port: int, state_dir: object) -> subprocess.Popen[bytes]:
        process = self.processes.start(
            name,
            "-m",
            "controlplane",
            "dataplane",
            "--cp",
            self.cp,
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(state_dir),
            "--usage-flush-ms",
            "50",
        )
        return process


@pytest.fixture
def stack(processes, db_url, tmp_path) -> Stack:
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    processes.start(
        "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{upstream_port}"
    )
    stack = Stack(
        processes=processes,
        db_url=db_url,
        tmp=tmp_path,
        upstream=upstream,
        cp=f"127.0.0.1:{free_port()}",
    )
    stack.start_cp()
    wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(gateway_document(upstream, {"acme-corp": KEY}, service="ai-service"))
    applied = meterline("apply", str(gateway_file), "--cp", stack.cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    return stack


def serves(dp: str) -> bool:
    """Whether the data plane answers a real request (it has a config with our key)."""
    try:
        response = httpx.post(
            f"{dp}/chat/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ready?"}]},
            headers={"apikey": KEY},
            timeout=2,
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


@dataclass
class Load:
    """WORKERS threads sending chat requests round-robin to data planes, as many as allowed.

    The test grants requests in phases (``allow``) and waits for them (``wait_done``), so a
    phase is a count of requests, whatever the machine's speed.
    """

    urls: list[str]
    ok: list[tuple[str, int]] = field(default_factory=list)  # (request id, tokens)
    failed: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    stopped: bool = False
    _allowed: int = 0
    _started: int = 0

    def allow(self, count: int) -> None:
        with self.lock:
            self._allowed += count
            self.lock.notify_all()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()

    def _next(self) -> int | None:
        with self.lock:
            self.lock.wait_for(lambda: self.stopped or self._started < self._allowed, timeout=30)
            if self.stopped or self._started >= self._allowed:
                return None
            self._started += 1
            return self._started

    def _one(self, client: httpx.Client, n: int) -> None:
        url = self.urls[n % len(self.urls)]
        words = " ".join(f"w{i}" for i in range(n % 7 + 1))
        body: dict[str, object] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"request {n} {words}"}],
        }
        stream = n % 4 == 0
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        try:
            response = client.post(f"{url}/chat/chat/completions", json=body)
        except httpx.HTTPError as exc:
            with self.lock:
                self.failed.append(f"#{n} {url}: {type(exc).__name__}")
            return
        if response.status_code != 200:
            with self.lock:
                self.failed.append(f"#{n} {url}: {response.status_code} {response.text[:200]}")
            return
        if stream:
            chunks = [
                json.loads(line[6:])
                for line in response.text.splitlines()
                if line.startswith("data: {")
            ]
            usage = chunks[-1]["usage"]
        else:
            usage = response.json()["usage"]
        with self.lock:
            self.ok.append(
                (
                    response.headers["x-request-id"],
                    usage["prompt_tokens"] + usage["completion_tokens"],
                )
            )

    def _worker(self) -> None:
        with httpx.Client(headers={"apikey": KEY}, timeout=10) as client:
            while (n := self._next()) is not None:
                self._one(client, n)

    def __enter__(self) -> Load:
        self._pool = ThreadPoolExecutor(WORKERS)
        self._futures = [self._pool.submit(self._worker) for _ in range(WORKERS)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for future in self._futures:
            future.result(timeout=30)
        self._pool.shutdown()

    def done(self) -> int:
        with self.lock:
            return len(self.ok) + len(self.failed)

    def run(self, count: int, *, what: str) -> None:
        """Allow ``count`` more requests and wait until all allowed ones are done."""
        self.allow(count)
        with self.lock:
            target = self._allowed
        wait_until(lambda: self.done() >= target, timeout=20, what=f"{target} requests ({what})")


def stored_usage(cp: str) -> list[usage_pb2.UsageEvent]:
    """Every usage event the control plane stored (all pages)."""
    events: list[usage_pb2.UsageEvent] = []
    with grpc.insecure_channel(cp) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        token = ""
        while True:
            page = stub.ListUsageEvents(
                usage_pb2.ListUsageEventsRequest(page_size=1000, page_token=token)
            )
            events.extend(page.usage_events)
            token = page.next_page_token
            if not token:
                return events


def wait_for_usage(
    stack: Stack, check: Callable[[list[usage_pb2.UsageEvent]], bool]
) -> list[usage_pb2.UsageEvent]:
    found: list[usage_pb2.UsageEvent] = []

    def poll() -> bool:
        nonlocal found
        try:
            found = stored_usage(stack.cp)
        except grpc.RpcError:
            return False
        return check(found)

    try:
        wait_until(poll, timeout=20, what="usage events at the control plane")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {len(found)} stored\n{stack.processes.logs()}") from None
    return found


def registry_status(cp: str) -> str:
    """The sync status of the only registered data plane."""
    with grpc.insecure_channel(cp) as channel:
        stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)
        (plane,) = stub.ListDataPlanes(dataplanes_pb2.ListDataPlanesRequest()).data_planes
    return dataplanes_pb2.SyncStatus.Name(plane.sync_status).removeprefix("SYNC_STATUS_").lower()


def provider_requests(upstream: str) -> list[dict]:
    return [
        r
        for r in httpx.get(f"{upstream}/_fake/requests").json()
        # A body cut by a killed data plane is no request the provider could answer.
        if r["body"] is not None and r["body"]["messages"][-1]["content"] != "ready?"
    ]


def test_control_plane_killed_under_load_loses_and_duplicates_nothing(stack, processes) -> None:
    # Given two data planes serving through the fake provider
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        stack.start_dp(f"dp{i}", port=port, state_dir=stack.tmp / f"state{i}")
    dps = [f"http://127.0.0.1:{port}" for port in ports]
    for dp in dps:
        wait_until(lambda dp=dp: serves(dp), timeout=15, what=f"data plane {dp}")

    with Load(urls=dps) as load:
        load.run(100, what="before the crash")
        # When the control plane is killed -9 in the middle of steady load...
        load.allow(150)
        stack.kill_cp()
        # ...the data planes keep serving while it is down...
        load.run(0, what="while the control plane is down")
        # ...and it comes back on the same database, under load
        load.allow(150)
        stack.start_cp()
        load.run(100, what="after the restart")

    # Then no request failed
    assert load.failed == [], load.failed[:5]
    assert len(load.ok) >= 350
    # And every event arrived exactly once: as many as requests, the provider's exact tokens
    expected_ids = {f"{rid}:{kind}" for rid, _ in load.ok for kind in ("input", "output")}
    events = wait_for_usage(
        stack,
        lambda found: {e.id for e in found} >= expected_ids,
    )
    load_events = [e for e in events if e.id in expected_ids]
    assert len(load_events) == len(expected_ids)
    reported = sum(tokens for _, tokens in load.ok)
    assert sum(e.value for e in load_events) == reported
    # The provider saw exactly the requests the clients saw answered, so nothing else hides.
    assert len(provider_requests(stack.upstream)) == len(load.ok)
    assert len(events) == len(load_events) + 2 * len(dps)  # plus the readiness probes
    print(f"control-plane kill -9: {len(load.ok)} requests, 0 failed, 0 events lost")


# One backend: a data plane serving its cached config while the control plane is down never
# reaches the database.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_data_plane_started_while_the_control_plane_is_down_serves_from_its_cache(
    stack, processes
) -> None:
    port = free_port()
    dp = f"http://127.0.0.1:{port}"
    state = stack.tmp / "state"
    # Given a data plane that synced once (its snapshot is cached) and was stopped
    first = stack.start_dp("dp-first", port=port, state_dir=state)
    wait_until(lambda: serves(dp), timeout=15, what="data plane synced")
    first.terminate()
    first.wait(timeout=10)
    assert (state / "config" / "config.bin").stat().st_mode & 0o077 == 0

    # When the control plane is down and the data plane starts again
    stack.kill_cp()
    stack.start_dp("dp-cached", port=port, state_dir=state)
    # Then it serves from its cache (key auth and routing included)
    wait_until(lambda: serves(dp), timeout=15, what="data plane serving from its cache")
    wrong_key = httpx.post(
        f"{dp}/chat/chat/completions", json={"messages": []}, headers={"apikey": "nope"}
    )
    assert wrong_key.status_code == 401

    # And when the control plane returns, the usage served meanwhile arrives, and the data
    # plane (same node id) reports the version it holds: nothing new is pushed.
    stack.start_cp()
    wait_for_usage(stack, lambda found: len(found) == 4)
    # (the usage stream may deliver before the config stream's registry write lands)
    wait_until(
        lambda: registry_status(stack.cp) in {"connected", "in_sync"},
        timeout=15,
        what="the data plane registered again",
    )
    listed = meterline("dataplanes", "list", "--json", "--cp", stack.cp)
    assert listed.returncode == 0, listed.stderr
    (plane,) = json.loads(listed.stdout)
    assert plane["status"] in {"connected", "in_sync"}
    assert plane["config_version"]
    logs = processes.logs()
    assert "serving cached config version" in logs
    second_run = logs.split("--- dp-cached.log", 1)[1].split("\n--- ", 1)[0]
    assert "applied config version" not in second_run
    table = meterline("dataplanes", "list", "--cp", stack.cp)
    assert plane["node_id"] in table.stdout and "NODE ID" in table.stdout


def test_a_data_plane_killed_under_load_delivers_its_spool_after_restart(stack, processes) -> None:
    port = free_port()
    dp = f"http://127.0.0.1:{port}"
    state = stack.tmp / "state"
    process = stack.start_dp("dp-1", port=port, state_dir=state)
    wait_until(lambda: serves(dp), timeout=15, what="data plane")

    with Load(urls=[dp]) as load:
        load.run(50, what="with the control plane up")
        # Given usage that can only be in the spool: the control plane is down...
        stack.kill_cp()
        load.run(100, what="spooled while the control plane is down")
        # ...when the data plane is killed -9 with requests in flight
        load.allow(100)
        wait_until(lambda: load.done() > 160, what="requests in flight")
        # (no request starts after the kill, so every failure was in flight at it)
        load.stop()
        processes.kill9(process)
    served_before_kill = len(load.ok)
    in_flight = len(load.failed)
    assert in_flight <= WORKERS

    # And both come back, the data plane on the same state directory
    stack.start_cp()
    stack.start_dp("dp-2", port=port, state_dir=state)

    # Then every request that completed for its client is billed, exactly
    expected_ids = {f"{rid}:{kind}" for rid, _ in load.ok for kind in ("input", "output")}
    events = wait_for_usage(stack, lambda found: {e.id for e in found} >= expected_ids)
    by_id = {e.id: e for e in events}
    assert sum(by_id[i].value for i in expected_ids) == sum(t for _, t in load.ok)
    # And what can be lost is bounded by the requests in flight at the kill: the provider
    # answered at most that many requests that no client saw and no event records.
    recorded_requests = {e.id.rsplit(":", 1)[0] for e in events}
    answered = len(provider_requests(stack.upstream))
    lost = answered - (len(recorded_requests) - 1)  # minus the readiness probe
    assert 0 <= lost <= in_flight <= WORKERS, (lost, in_flight)
    print(f"data-plane kill -9: {in_flight} requests in flight, {lost} lost")
    assert served_before_kill >= 150
    # The spool is emptied once the control plane has acknowledged it.
    wait_until(
        lambda: not list((state / "spool").glob("seg-*.wal")), timeout=10, what="empty spool"
    )
