"""Rate limits as a user configures them: YAML applied to a control plane, two data-plane
processes sharing one Redis window, the openai SDK as the client."""

from __future__ import annotations

import uuid
from pathlib import Path

import openai
import pytest
import redis

from support.documents import gateway_document
from support.processes import free_port, http_ready, meterline, wait_until

RATE_LIMIT = """\
      - name: rate-limiting-advanced
        config:
          limit: [3]
          window_size: [day]          # fixed: only a test straddling 00:00 UTC sees it turn
          window_type: fixed
          strategy: redis
          namespace: {namespace}
          redis: {{host: 127.0.0.1, port: 6379}}
"""


@pytest.fixture
def namespace():
    name = f"e2e-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        keys = list(client.scan_iter(f"meterline:ratelimit:{name}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_two_data_plane_processes_share_one_redis_window(
    processes, tmp_path: Path, namespace: str
) -> None:
    fake, cp_port, dp_ports = free_port(), free_port(), (free_port(), free_port())
    processes.start("fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{fake}")
    cp = f"127.0.0.1:{cp_port}"
    db = f"sqlite:///{tmp_path / 'cp.db'}"
    processes.start("cp", "-m", "controlplane", "controlplane", "--db", db, "--listen", cp)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        gateway_document(
            f"http://127.0.0.1:{fake}",
            {"acme": "acme-key-0123"},
            provider_key="sk-rl",
            service_plugins=RATE_LIMIT.format(namespace=namespace),
        )
    )
    wait_until(lambda: http_ready(f"http://127.0.0.1:{fake}/_fake/requests", {200}), what="fake")
    applied = meterline("apply", str(config), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    urls = []
    for index, port in enumerate(dp_ports):
        processes.start(
            f"dp{index}",
            "-m",
            "controlplane",
            "dataplane",
            "--cp",
            cp,
            "--listen",
            f"127.0.0.1:{port}",
        )
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_until(lambda url=url: http_ready(f"{url}/nothing-here", {404}), what="data plane")

    def chat(url: str):
        client = openai.OpenAI(base_url=f"{url}/chat", api_key="acme-key-0123", max_retries=0)
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    # Three requests a day, whichever data plane they reach
    remaining = [chat(url).headers["x-ratelimit-remaining-day"] for url in (*urls, urls[0])]
    assert remaining == ["2", "1", "0"]
    for url in urls:
        with pytest.raises(openai.RateLimitError) as refused:
            chat(url)
        assert int(refused.value.response.headers["retry-after"]) > 0
