"""SIGTERM, as an orchestrator sends it: a data plane finishes what it serves and flushes its
usage; a control plane ends its streams so data planes move to another replica at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from cryptography.fernet import Fernet

from controlplane import pki
from controlplane.api.auth import Scope, add_token
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc, usage_pb2, usage_pb2_grpc
from support.documents import gateway_document
from support.processes import Processes, free_port, http_ready, meterline, wait_until

# Ten words: the fake streams one chunk per reply word, 150 ms apart (about 2 s a stream).
PROMPT = "one two three four five six seven eight nine ten"
CHUNK_DELAY_MS = 150


def _gateway(fake: int, *names: str) -> str:
    return gateway_document(
        f"http://127.0.0.1:{fake}",
        {name: f"{name}-key-0123" for name in names},
        provider_key="sk-graceful",
    )


def _stream(
    port: int, key: str, started: threading.Barrier | None = None, route: str = "chat"
) -> tuple[str, int]:
    """One streamed chat completion: (the reply text, total tokens from the usage chunk)."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/{route}", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, total = [], 0
    for index, chunk in enumerate(stream):
        if index == 1 and started is not None:
            started.wait(timeout=10)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            total = chunk.usage.total_tokens
    return "".join(text), total


def _stored_tokens(cp: str, subject: str, token: str | None = None) -> int:
    """Tokens of ``subject``'s usage events stored by the control plane."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(cp) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        request = usage_pb2.ListUsageEventsRequest(subject=subject, page_size=1000)
        events = stub.ListUsageEvents(request, metadata=metadata, timeout=10).usage_events
    return sum(e.value for e in events)


SLOW_ROUTE = """\
  - name: slow
    url: http://127.0.0.1:{slow}
    routes: [{{name: slow, paths: [/slow]}}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer sk-graceful}}
          model:
            provider: openai
            name: gpt-4o-mini
            options: {{upstream_url: "http://127.0.0.1:{slow}/v1/chat/completions"}}
"""


def test_sigterm_on_a_data_plane_finishes_streams_flushes_usage_and_exits_0(
    processes: Processes, tmp_path: Path
) -> None:
    # Two upstreams: streams of ~2 s (150 ms a chunk) and of ~14 s (1 s a chunk).
    fake, slow, cp_port, dp_port = free_port(), free_port(), free_port(), free_port()
    cp = f"127.0.0.1:{cp_port}"
    for name, port, delay in (("fake", fake, CHUNK_DELAY_MS), ("slow", slow, 1000)):
        processes.start(
            name, "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{port}",
            "--chunk-delay-ms", str(delay),
        )  # fmt: skip
    processes.start(
        "cp", "-m", "controlplane", "controlplane", "--db", f"sqlite:///{tmp_path / 'cp.db'}",
        "--listen", cp,
    )  # fmt: skip
    config = tmp_path / "gateway.yaml"
    document = _gateway(fake, "alice", "bob")
    config.write_text(
        document.replace("consumers:\n", SLOW_ROUTE.format(slow=slow) + "consumers:\n")
    )
    wait_until(lambda: meterline("apply", str(config), "--cp", cp).returncode == 0, what="apply")
    state = tmp_path / "dp-state"
    dp = processes.start(
        "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}",
        "--state-dir", str(state), "--usage-flush-ms", "50", "--shutdown-timeout", "4",
    )  # fmt: skip
    wait_until(lambda: http_ready(f"http://127.0.0.1:{dp_port}/nope", {404}), what="data plane")

    # Given four short streams (alice) and one longer than --shutdown-timeout (bob) in flight...
    in_flight = 4
    started = threading.Barrier(in_flight + 2)
    with ThreadPoolExecutor(in_flight + 1) as pool:
        futures = [
            pool.submit(_stream, dp_port, "alice-key-0123", started) for _ in range(in_flight)
        ]
        too_long = pool.submit(_stream, dp_port, "bob-key-0123", started, route="slow")
        started.wait(timeout=15)
        # ...when the data plane gets SIGTERM mid-stream...
        signalled = time.monotonic()
        dp.terminate()

        # ...it stops accepting new connections at once...
        def refused() -> bool:
            try:
                httpx.get(f"http://127.0.0.1:{dp_port}/nope", timeout=0.5)
            except httpx.TransportError:
                return True
            return False

        wait_until(refused, timeout=2, what="the listener to close")
        assert all(not f.done() for f in futures), "the streams should still be running"
        # ...while every stream that fits the deadline completes, usage chunk included...
        results = [f.result(timeout=20) for f in futures]
        # ...and the one that does not is cut at the deadline.
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            too_long.result(timeout=20)
    assert all(text.endswith("ten") for text, _ in results), results
    reported = sum(total for _, total in results)
    assert reported > 0 and all(total == results[0][1] for _, total in results)
    # Then it exits 0, after the control plane acknowledged the usage of those streams.
    assert dp.wait(timeout=15) == 0, processes.logs()
    stopped_after = time.monotonic() - signalled
    print(f"\ndata plane stopped {stopped_after:.2f} s after SIGTERM (deadline 4 s)")
    assert 4 <= stopped_after < 4 + 2 + 2  # the deadline, the bounded usage flush, the exit
    assert _stored_tokens(cp, "alice") == reported
    spooled = [p for p in (state / "spool").rglob("*") if p.is_file() and p.stat().st_size]
    assert spooled == [], "acknowledged usage must leave the spool"
    assert "unacknowledged" not in (tmp_path / "dp.log").read_text()


@pytest.mark.postgres
def test_sigterm_on_a_control_plane_moves_its_data_planes_to_another_replica(
    processes: Processes, pg_url: str, tmp_path: Path
) -> None:
    # Given two control-plane replicas with mTLS, and a data plane that knows both
    now = datetime.now(UTC)
    directory = tmp_path / "pki"
    pki.init(directory, hosts=["127.0.0.1"], now=now)
    dp_cert = pki.issue_dataplane(directory, name="edge-ha", now=now)
    tokens = tmp_path / "tokens.yaml"
    admin = add_token(tokens, name="ops", scope=Scope.ADMIN)
    key = tmp_path / "secrets.key"
    key.write_bytes(Fernet.generate_key())
    env = {"METERLINE_TOKEN": admin}
    fake, dp_port = free_port(), free_port()
    processes.start("fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{fake}")
    replicas = {}
    for name in ("a", "b"):
        operator, cluster = free_port(), free_port()
        process = processes.start(
            f"cp-{name}", "-m", "controlplane", "controlplane", "--db", pg_url,
            "--listen", f"127.0.0.1:{operator}", "--cluster-listen", f"127.0.0.1:{cluster}",
            "--tokens-file", str(tokens), "--secrets-key-file", str(key),
            "--cluster-ca", str(directory / pki.CA_CERT),
            "--cluster-cert", str(directory / pki.SERVER_CERT),
            "--cluster-key", str(directory / pki.SERVER_KEY),
            insecure_dev=False,
        )  # fmt: skip
        replicas[name] = (process, f"127.0.0.1:{operator}", f"127.0.0.1:{cluster}")
    (cp_a, op_a, cluster_a), (_, op_b, cluster_b) = replicas["a"], replicas["b"]
    config = tmp_path / "gateway.yaml"
    config.write_text(_gateway(fake, "alice"))
    applied = lambda: meterline("apply", str(config), "--cp", op_a, env=env)  # noqa: E731
    wait_until(lambda: applied().returncode == 0, what="apply through replica A")
    processes.start(
        "dp", "-m", "controlplane", "dataplane", "--cp", f"{cluster_a},{cluster_b}",
        "--listen", f"127.0.0.1:{dp_port}", "--node-id", "edge-ha", "--usage-flush-ms", "50",
        "--cluster-ca", str(directory / pki.CA_CERT), "--cluster-cert", str(dp_cert.cert_path),
        "--cluster-key", str(dp_cert.key_path),
        insecure_dev=False,
    )  # fmt: skip
    wait_until(lambda: http_ready(f"http://127.0.0.1:{dp_port}/nope", {404}), what="data plane")
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{dp_port}/chat", api_key="alice-key-0123", max_retries=0
    )

    def ask() -> int:
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
        )
        assert response.usage is not None
        return response.usage.total_tokens

    reported = sum(ask() for _ in range(3))

    # When replica A (the one the data plane uses: first in its list) gets SIGTERM...
    signalled = time.monotonic()
    cp_a.terminate()
    assert cp_a.wait(timeout=10) == 0, processes.logs()
    stopped_after = time.monotonic() - signalled
    # ...the data plane keeps serving, and a change made through B reaches it: its config
    # stream moved to B.
    reported += sum(ask() for _ in range(3))
    config.write_text(_gateway(fake, "alice", "bob"))
    assert meterline("apply", str(config), "--cp", op_b, env=env).returncode == 0

    def bob_served() -> bool:
        try:
            httpx_status = httpx.post(
                f"http://127.0.0.1:{dp_port}/chat/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                headers={"apikey": "bob-key-0123"},
                timeout=5,
            ).status_code
        except httpx.TransportError:
            return False
        return httpx_status == 200

    wait_until(bob_served, timeout=15, what="bob's key via replica B")
    moved_after = time.monotonic() - signalled
    print(
        f"\ncontrol plane A stopped {stopped_after:.2f} s after SIGTERM; the data plane synced "
        f"a change through B {moved_after:.2f} s after it"
    )
    assert stopped_after < 5
    # Every usage event, before and after the switch, arrived exactly once.
    wait_until(
        lambda: _stored_tokens(op_b, "alice", admin) == reported, timeout=15, what="usage via B"
    )
    # The registry shows it in sync through B: A's disconnect did not overwrite B's connect.
    with grpc.insecure_channel(op_b) as channel:
        plane = dataplanes_pb2_grpc.DataPlaneServiceStub(channel).GetDataPlane(
            dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/edge-ha"),
            metadata=(("authorization", f"Bearer {admin}"),),
            timeout=10,
        )
    assert plane.sync_status == dataplanes_pb2.SYNC_STATUS_IN_SYNC
