"""One validation, as a user meets it: `meterline controlplane` checks every apply with the data
plane's own compiler, so a file that would make data planes NACK is refused at apply (and at
--validate-only), the running data plane keeps serving and stays in sync; a file that passes
is the config the data plane then applies (ACKs) and serves.

Whole processes: a fake OpenAI provider, `meterline controlplane`, `meterline dataplane`, the
meterline CLI and the official openai SDK.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from support.processes import free_port, http_ready, meterline, wait_until

KEY = "acme-secret-key"

HEAD = """\
_format_version: "3.0"
services:
  - name: ai
    url: {upstream}
    routes:
      - {{name: chat, paths: [/chat]}}
"""
TAIL = """\
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
plugins:
  - name: key-auth
"""
PROXY = (
    HEAD
    + """\
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer sk-one}}
          model:
            provider: openai
            name: gpt-first
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
"""
    + TAIL
)
# Valid alone; beside the stored ai-proxy of PROXY (not listed here) a second ai-proxy of the
# service, which every data plane refuses: apply refuses it, sync (which removes the
# ai-proxy) passes.
ADVANCED = (
    HEAD
    + """\
      - {{name: extra, paths: [/extra]}}
    plugins:
      - name: ai-proxy-advanced
        config:
          targets:
            - route_type: llm/v1/chat
              auth: {{header_name: Authorization, header_value: Bearer sk-two}}
              model:
                provider: openai
                name: gpt-second
                options: {{upstream_url: "{upstream}/v1/chat/completions"}}
"""
    + TAIL
)


def _model_served(dp: str, path: str) -> str:
    client = openai.OpenAI(base_url=f"{dp}{path}", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="client-model", messages=[{"role": "user", "content": "hello there"}]
    )
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    return completion.model


def _dataplanes(cp: str) -> list[dict[str, str]]:
    listed = meterline("dataplanes", "list", "--json", "--cp", cp)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


# One backend: what is checked here (the data plane's compiler at apply, serving going on) does
# not depend on the database; apply on both backends is tested in tests/integration.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_file_data_planes_would_refuse_is_refused_at_apply_and_serving_goes_on(
    processes, db_url: str, tmp_path: Path
) -> None:
    upstream_port, cp_port, dp_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    processes.start(
        "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{upstream_port}"
    )
    cp = f"127.0.0.1:{cp_port}"
    processes.start("cp", "-m", "controlplane", "controlplane", "--db", db_url, "--listen", cp)
    wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(PROXY.format(upstream=upstream))
    second.write_text(ADVANCED.format(upstream=upstream))
    applied = meterline("apply", str(first), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    processes.start(
        "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
    )
    dp = f"http://127.0.0.1:{dp_port}"
    wait_until(lambda: http_ready(f"{dp}/nothing-here", {404}), what="data plane config")
    assert _model_served(dp, "/chat") == "gpt-first"
    wait_until(lambda: _dataplanes(cp)[0]["status"] == "in_sync", what="the data plane in sync")
    (plane,) = _dataplanes(cp)
    version = plane["config_version"]

    # apply and --validate-only refuse the second file, naming the plugin by its decK name...
    for flags in ((), ("--validate-only",)):
        refused = meterline("apply", str(second), *flags, "--cp", cp)
        assert refused.returncode == 1, refused.stdout
        assert "INVALID_ARGUMENT" in refused.stderr, refused.stderr
        assert 'ai-proxy-advanced plugin for service "ai"' in refused.stderr, refused.stderr
        assert 'a second "ai-proxy" plugin on the same scope' in refused.stderr
    # ...nothing changed: the data plane still serves the first config, in sync, no NACK.
    assert _model_served(dp, "/chat") == "gpt-first"
    (plane,) = _dataplanes(cp)
    assert (plane["status"], plane["config_version"], plane["error"]) == ("in_sync", version, "")

    # sync removes the stored ai-proxy: the config passes the compiler, and the data plane
    # applies (ACKs) exactly that config and serves it.
    synced = meterline("sync", str(second), "--cp", cp)
    assert synced.returncode == 0, synced.stderr
    wait_until(
        lambda: _dataplanes(cp)[0]["config_version"] != version, what="the new config applied"
    )
    (plane,) = _dataplanes(cp)
    assert (plane["status"], plane["error"]) == ("in_sync", "")
    assert _model_served(dp, "/extra") == "gpt-second"
    assert _model_served(dp, "/chat") == "gpt-second"
