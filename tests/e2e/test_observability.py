"""Observability of whole processes: readiness flips when the first snapshot arrives, both
planes' /metrics move with a request, JSON log lines carry the request id that the response
header and the stored usage event carry, and --workers N shares one /metrics."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meterline.admin.v1 import usage_pb2, usage_pb2_grpc
from support.documents import gateway_document
from support.processes import free_port, grpc_ready, http_ready, meterline, wait_until

KEY = "acme-observed-key"
MESSAGES = [{"role": "user", "content": "a private prompt about observability"}]


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


@pytest.fixture
def upstream(processes) -> str:
    port = free_port()
    processes.start("fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ready(f"{url}/_fake/requests", {200}), what="fake provider")
    return url


def start_controlplane(processes, tmp_path, upstream: str) -> tuple[str, str]:
    cp_port, metrics_port = free_port(), free_port()
    cp = f"127.0.0.1:{cp_port}"
    processes.start(
        "cp",
        "-m",
        "controlplane",
        "controlplane",
        "--db",
        f"sqlite:///{tmp_path}/cp.db",
        "--listen",
        cp,
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--log-format",
        "json",
    )
    wait_until(lambda: grpc_ready(cp), what="control plane")
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(gateway_document(upstream, {"acme-corp": KEY}, service="ai-service"))
    applied = meterline("apply", str(gateway_file), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    return cp, f"http://127.0.0.1:{metrics_port}"


def test_readiness_metrics_and_json_logs(processes, tmp_path, upstream) -> None:
    # Given a data plane started before its control plane exists: alive, not ready.
    cp_port = free_port()
    dp_port = free_port()
    dp = f"http://127.0.0.1:{dp_port}"
    config = tmp_path / "meterline.yaml"
    config.write_text(
        f"dataplane:\n  cp: 127.0.0.1:{cp_port}\n  listen: 127.0.0.1:{dp_port}\n"
        "  log_format: json\n"
    )
    processes.start("dp", "-m", "controlplane", "--config", str(config), "-v", "dataplane")
    wait_until(lambda: http_ready(f"{dp}/healthz", {200}), what="data plane alive")
    assert httpx.get(f"{dp}/readyz").status_code == 503

    # When the control plane comes up on that port: the first snapshot makes it ready.
    cp_metrics_port = free_port()
    cp = f"127.0.0.1:{cp_port}"
    processes.start(
        "cp",
        "-m",
        "controlplane",
        "controlplane",
        "--db",
        f"sqlite:///{tmp_path}/cp.db",
        "--listen",
        cp,
        "--metrics-listen",
        f"127.0.0.1:{cp_metrics_port}",
        "--log-format",
        "json",
    )
    cp_metrics = f"http://127.0.0.1:{cp_metrics_port}"
    wait_until(lambda: grpc_ready(cp), what="control plane")
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(gateway_document(upstream, {"acme-corp": KEY}, service="ai-service"))
    applied = meterline("apply", str(gateway_file), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    wait_until(lambda: http_ready(f"{dp}/readyz", {200}), what="data plane ready")
    ingested_before = sample(
        scrape(cp_metrics), "meterline_controlplane_usage_events_ingested_total"
    )

    # And a request goes through.
    client = openai.OpenAI(base_url=f"{dp}/chat", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]

    # Then the data plane's counters moved ...
    text = scrape(dp)
    assert sample(text, "meterline_dataplane_requests_total", route="chat", status="200") == 1
    tokens = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(text, "meterline_dataplane_tokens_total", type="input", **tokens) == (
        completion.usage.prompt_tokens
    )
    assert sample(text, "meterline_dataplane_config_snapshots_total", result="ack") >= 1
    assert sample(text, "meterline_dataplane_config_info") == 1
    # ... the control plane's ingest counter rose by the request's events (input + output) ...
    wait_until(
        lambda: (
            sample(scrape(cp_metrics), "meterline_controlplane_usage_events_ingested_total")
            == ingested_before + 2
        ),
        what="usage ingested",
    )
    cp_text = scrape(cp_metrics)
    assert sample(cp_text, "meterline_controlplane_dataplane_streams") == 1
    assert sample(cp_text, "meterline_controlplane_snapshot_pushes_total") >= 1
    # ... the stored usage events carry the response's request id ...
    with grpc.insecure_channel(cp) as channel:
        events = usage_pb2_grpc.UsageServiceStub(channel).ListUsageEvents(
            usage_pb2.ListUsageEventsRequest(page_size=100)
        )
    assert {e.data["request_id"] for e in events.usage_events} == {request_id}
    # ... and so do the data plane's JSON log lines about it; every line is a JSON object.
    processes.stop_all()
    dp_log = (tmp_path / "dp.log").read_text()
    lines = [json.loads(line) for line in dp_log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("request_id") == request_id for line in lines), dp_log
    assert not [line for line in lines if line.get("request_id") not in (None, request_id)]
    for secret in (KEY, "sk-upstream-secret", MESSAGES[0]["content"]):
        assert secret not in dp_log
    cp_lines = [
        json.loads(line)
        for line in (tmp_path / "cp.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line["logger"] == "controlplane.configsync.session" for line in cp_lines)


def test_workers_share_one_metrics_endpoint(processes, tmp_path, upstream) -> None:
    cp, _ = start_controlplane(processes, tmp_path, upstream)
    dp_port = free_port()
    dp = f"http://127.0.0.1:{dp_port}"
    processes.start(
        "dp",
        "-m",
        "controlplane",
        "dataplane",
        "--cp",
        cp,
        "--listen",
        f"127.0.0.1:{dp_port}",
        "--workers",
        "2",
    )
    wait_until(lambda: http_ready(f"{dp}/readyz", {200}), what="data plane ready")
    # Every worker holds a config before the requests (each answers /readyz on its own).
    wait_until(
        lambda: sample(scrape(dp), "meterline_dataplane_config_info") == 2, what="two workers"
    )
    # Given requests on fresh connections (the kernel spreads them over the workers) ...
    count = 12
    prompt_tokens = 0
    for _ in range(count):
        with openai.OpenAI(base_url=f"{dp}/chat", api_key=KEY, max_retries=0) as client:
            completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            prompt_tokens += completion.usage.prompt_tokens
    # ... then any worker's /metrics shows them all (another worker's within a second),
    # however often it is scraped.
    wait_until(
        lambda: sample(scrape(dp), "meterline_dataplane_requests_total", route="chat") == count,
        timeout=5,
        what="every worker's requests",
    )
    for _ in range(6):
        text = scrape(dp)
        assert sample(text, "meterline_dataplane_requests_total", route="chat") == count
        assert sample(text, "meterline_dataplane_request_duration_seconds_count") == count
        assert sample(text, "meterline_dataplane_time_to_first_token_seconds_count") == count
        assert sample(text, "meterline_dataplane_tokens_total", type="input") == prompt_tokens
        assert sample(text, "meterline_dataplane_config_snapshots_total", result="ack") >= 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_data_plane_process_exports_spans_as_it_serves(
    processes, tmp_path, upstream, workers: int
) -> None:
    # The data plane as it runs (python -m controlplane dataplane, OTEL_* in its environment):
    # its event loop hands the requests' records to its exporter process while it serves, the
    # spans reach the collector without any flush, /metrics counts no dropped request, and
    # SIGTERM stops the exporter process (or processes: one per worker) too.
    from support.otlp_receiver import attributes, grpc_receiver

    cp, _ = start_controlplane(processes, tmp_path, upstream)
    with grpc_receiver() as (otlp, received):
        dp_port = free_port()
        dp = f"http://127.0.0.1:{dp_port}"
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "dp-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        }
        data_plane = processes.start(
            "dp",
            "-m",
            "controlplane",
            "dataplane",
            "--cp",
            cp,
            "--listen",
            f"127.0.0.1:{dp_port}",
            "--workers",
            str(workers),
            env=env,
        )
        wait_until(lambda: http_ready(f"{dp}/readyz", {200}), what="data plane ready")
        wait_until(
            lambda: sample(scrape(dp), "meterline_dataplane_config_info") == workers,
            what="every worker configured",
        )
        count = 6
        tokens = 0
        for _ in range(count):
            with openai.OpenAI(base_url=f"{dp}/chat", api_key=KEY, max_retries=0) as client:
                completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
                tokens += completion.usage.prompt_tokens
        wait_until(
            lambda: len([s for s in received.spans() if s.name == "chat gpt-4o"]) == count,
            timeout=15,
            what="the request spans, exported while the data plane runs",
        )
        spans = [s for s in received.spans() if s.name == "chat gpt-4o"]
        assert sum(attributes(s.attributes)["gen_ai.usage.input_tokens"] for s in spans) == tokens
        assert len(received.spans()) == 2 * count  # each request and its one attempt
        text = scrape(dp)
        assert "meterline_dataplane_otel_dropped_total" in text
        assert sample(text, "meterline_dataplane_otel_dropped_total") == 0
        # This data plane's exporter processes (other tests may run theirs meanwhile): the
        # children of the process, or of its workers.
        family = {data_plane.pid} | {pid for pid in _pids() if _parent(pid) == data_plane.pid}
        exporters = [
            pid
            for pid in _pids()
            if _parent(pid) in family and "dataplane.observability.otel_process" in _cmdline(pid)
        ]
        assert len(exporters) == workers
        data_plane.terminate()
        assert data_plane.wait(timeout=30) == 0
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in exporters),
            timeout=15,
            what="the exporter processes gone with the data plane",
        )


def _pids() -> list[int]:
    return [int(Path(path).name) for path in glob.glob("/proc/[0-9]*")]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
