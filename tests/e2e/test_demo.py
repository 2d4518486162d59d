"""`meterline demo`, the README's first command ("The two commands"), runs the walkthrough and bills
exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_bills_the_prompt_tokens_the_provider_reported() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "fake OpenAI upstream" in out
    assert len(re.findall(r"^\s+\[(plain |stream)\] in=", out, re.M)) == 6
    reported = int(re.search(r"prompt tokens reported by the provider: (\d+)", out).group(1))
    line = re.search(r"^ai-token\s+usage\s+(\d+)\s+1\s+([\d.]+)$", out, re.M)
    assert line, out
    assert int(line.group(1)) == reported
    assert line.group(2) == f"{reported}.00"
