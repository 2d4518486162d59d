"""``meterline demo``: the walkthrough on the embedded default, as plain processes.

Starts a control plane on a temporary SQLite file, a data plane and (only when
OPENAI_API_KEY is not set) a local fake OpenAI upstream; applies the walkthrough config;
sends six chat requests through the gateway (three streamed); prints the invoice preview.
With ``serve``, the control plane also serves the console; the demo prints its URL, an admin
sign-in token and a portal token for acme, and keeps every process running until Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from controlplane.api.auth import Scope, add_token
from controlplane.cli.client import OperatorCredentials, admin_client
from controlplane.cli.output import plural
from controlplane.cli.render import invoice_table
from meterline.admin.v1 import billing_pb2, customers_pb2, gateway_pb2, usage_pb2

CONSUMER_KEY = "acme-secret-key"

WALKTHROUGH = """\
_format_version: "3.0"
services:
  - name: ai-service
    url: {upstream_base}
    routes:
      - name: chat
        paths: [/chat]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth:
            header_name: Authorization
            header_value: Bearer {upstream_key}
          model:
            provider: openai
            name: gpt-4o-mini
            options:
              upstream_url: {upstream_base}/v1/chat/completions
consumers:
  - username: acme-corp
    keyauth_credentials:
      - key: {consumer_key}
plugins:
  - name: key-auth
    config:
      key_names: [apikey]
billing:
  features:
    - {{key: ai-token, meter: llm_tokens, filters: {{provider: openai, type: input}}}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{feature: ai-token, price: {{type: unit, amount: "1"}}, entitlement: {{type: boolean}}}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: starter, start: now}}
"""

PROMPTS = [
    "Say hello to the Meterline walkthrough.",
    "What is a token?",
    "Name three colours.",
    "Count from one to five.",
    "Write a haiku about invoices.",
    "What is the capital of France?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walkthrough_yaml(*, upstream_base: str, upstream_key: str) -> str:
    return WALKTHROUGH.format(
        upstream_base=upstream_base, upstream_key=upstream_key, consumer_key=CONSUMER_KEY
    )


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _wait_http(url: str, *, until: float, ok: set[int]) -> None:
    while time.monotonic() < until:
        try:
            if httpx.get(url, timeout=1).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"error: {url} did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@dataclass(frozen=True)
class ChatResult:
    reply: str
    prompt_tokens: int
    completion_tokens: int


def _chat(base: str, prompt: str, *, stream: bool) -> ChatResult:
    """One chat request through the gateway; streams ask for the usage chunk."""
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
    }
    headers = {"apikey": CONSUMER_KEY}
    if not stream:
        response = httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=60)
        response.raise_for_status()
        data = response.json()
        usage = data["usage"]
        return ChatResult(
            data["choices"][0]["message"]["content"],
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    parts = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    with httpx.stream(
        "POST", f"{base}/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    parts.append(choice.get("delta", {}).get("content") or "")
    return ChatResult("".join(parts), usage["prompt_tokens"], usage["completion_tokens"])


def _wait_for_ctrl_c() -> None:
    """Block until SIGINT or SIGTERM; the caller's ExitStack then stops every process."""
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set())
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stop.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(*, serve: bool = False, console_port: int = 0) -> int:
    # Request lines of the demo's own HTTP client would drown the walkthrough's output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    real_key = os.environ.get("OPENAI_API_KEY")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="meterline-demo-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        deadline = time.monotonic() + 60
        cp_addr = f"127.0.0.1:{free_port()}"
        dp_port = free_port()
        if real_key:
            upstream_base, upstream_key = "https://api.openai.com", real_key
            print("using the real OpenAI API (OPENAI_API_KEY is set)")
        else:
            fake_port = free_port()
            upstream_base, upstream_key = f"http://127.0.0.1:{fake_port}", "sk-fake-demo"
            fake = _start(
                [
                    python,
                    "-m",
                    "dataplane.testing.fake_openai",
                    "--listen",
                    f"127.0.0.1:{fake_port}",
                ],
                work / "fake.log",
            )
            stack.callback(_stop, fake)
            print(f"fake OpenAI upstream on {upstream_base} (set OPENAI_API_KEY to use OpenAI)")
        db_url = f"sqlite:///{work / 'meterline.db'}"
        # One machine, one command: development mode (plaintext, no tokens, one port). The
        # README's "Trust model" shows the production setup (mTLS, operator tokens).
        console_args: list[str] = []
        sign_in_token = ""
        console_url = ""
        if serve:
            # The console signs people in even in development mode: one admin token for it.
            tokens_file = work / "tokens.yaml"
            sign_in_token = add_token(tokens_file, name="demo", scope=Scope.ADMIN)
            console_url = f"http://127.0.0.1:{console_port or free_port()}"
            console_args = [
                "--console-listen",
                console_url.removeprefix("http://"),
                "--tokens-file",
                str(tokens_file),
            ]
        cp = _start(
            [
                python,
                "-m",
                "controlplane",
                "controlplane",
                "--insecure-dev",
                "--db",
                db_url,
                "--listen",
                cp_addr,
                *console_args,
            ],
            work / "controlplane.log",
        )
        stack.callback(_stop, cp)
        print(f"control plane on {cp_addr} ({db_url}; --insecure-dev, local only)")
        with admin_client(cp_addr, wait_seconds=30, credentials=OperatorCredentials()) as client:
            applied = client.gateway.ApplyConfig(
                gateway_pb2.ApplyConfigRequest(
                    document=walkthrough_yaml(
                        upstream_base=upstream_base, upstream_key=upstream_key
                    )
                )
            )
            print(f"applied the walkthrough: {plural(len(applied.changes), 'change')}")
            for change in applied.changes:
                print(f"  {change}")
            dp = _start(
                [
                    python,
                    "-m",
                    "controlplane",
                    "dataplane",
                    "--insecure-dev",
                    "--cp",
                    cp_addr,
                    "--listen",
                    f"127.0.0.1:{dp_port}",
                    "--state-dir",
                    str(work / "dataplane-state"),
                ],
                work / "dataplane.log",
            )
            stack.callback(_stop, dp)
            base = f"http://127.0.0.1:{dp_port}/chat"
            # 404 on an unmatched path means the data plane holds a config and serves.
            _wait_http(f"http://127.0.0.1:{dp_port}/_ready_probe", until=deadline, ok={404})
            print(f"data plane on http://127.0.0.1:{dp_port}; OpenAI base_url {base}")
            prompt_total = 0
            for i, prompt in enumerate(PROMPTS):
                stream = i % 2 == 1
                result = _chat(base, prompt, stream=stream)
                prompt_total += result.prompt_tokens
                kind = "stream" if stream else "plain "
                print(
                    f"  [{kind}] in={result.prompt_tokens:<3} out={result.completion_tokens:<3}"
                    f" {prompt!r} -> {result.reply[:50]!r}"
                )
            print(f"prompt tokens reported by the provider: {prompt_total}")
            # Usage reaches the control plane asynchronously: wait for all 12 events.
            while time.monotonic() < deadline:
                events = client.usage.ListUsageEvents(
                    usage_pb2.ListUsageEventsRequest(subject="acme-corp", page_size=1000)
                ).usage_events
                if len(events) >= 2 * len(PROMPTS):
                    break
                time.sleep(0.1)
            try:
                invoice = client.billing.PreviewInvoice(
                    billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
                )
            except grpc.RpcError as exc:
                print(f"error: {exc.details()}", file=sys.stderr)
                return 1
            portal_token = ""
            if serve:
                portal_token = client.customers.CreatePortalToken(
                    customers_pb2.CreatePortalTokenRequest(
                        parent="customers/acme", ttl_seconds=24 * 3600
                    )
                ).token
        print()
        print(invoice_table(invoice))
        if serve:
            _wait_http(f"{console_url}/signin", until=time.monotonic() + 30, ok={200})
            print()
            print(f"console: {console_url}/")
            print(f"  sign in with this admin token: {sign_in_token}")
            print(f"  acme's invoice preview: {console_url}/customers/acme/preview")
            print(f"portal: {console_url}/portal/signin")
            print(f"  acme's portal token (24 h): {portal_token}")
            print(f"OpenAI base_url: {base} (header apikey: {CONSUMER_KEY})")
            print("Ctrl-C stops the demo and deletes its database.", flush=True)
            _wait_for_ctrl_c()
    return 0
