"""`meterline demo --serve` (docs/console.md, "Try it"): the walkthrough keeps running, with the
console to look at it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

import httpx


def test_demo_serve_prints_a_console_that_previews_the_invoice() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # the demo prints this last, then waits for Ctrl-C
            lines.append(line)
            if line.startswith("Ctrl-C stops the demo"):
                break
        out = "".join(lines)
        reported = int(re.search(r"prompt tokens reported by the provider: (\d+)", out).group(1))
        console = re.search(r"^console: (http://127\.0\.0\.1:\d+)/$", out, re.M).group(1)
        token = re.search(r"sign in with this admin token: (mlt_\S+)$", out, re.M).group(1)
        portal_token = re.search(r"portal token \(24 h\): (mlp_\S+)$", out, re.M).group(1)
        # The printed token signs in (as a bearer here; the browser test signs in by form).
        admin = {"Authorization": f"Bearer {token}"}
        preview = httpx.get(f"{console}/customers/acme/preview.json", headers=admin).json()
        (line,) = preview["invoice"]["lines"]
        assert Decimal(line["quantity"]) == reported
        portal = {"Authorization": f"Bearer {portal_token}"}
        mine = httpx.get(f"{console}/portal/customers/acme.json", headers=portal)
        assert mine.json()["usage"]["tokens_by_type"]["input"] == reported
        # Ctrl-C ends the demo cleanly.
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        assert demo.stdout is not None
        demo.stdout.close()
