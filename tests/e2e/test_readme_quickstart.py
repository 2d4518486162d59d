"""README "Quick start: 2. Running it yourself", run as written: every command of its block, in
order, as whole processes, from a copy of the repository's examples/.

Only the addresses change (free ports instead of 8900, 50051 and 8000, given through the
METERLINE_* variables every flag reads, or replaced where the block names them), and the
user's state directory is a temporary XDG_STATE_HOME.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from meterline.admin.v1 import usage_pb2, usage_pb2_grpc
from support.processes import PYTHON, free_port, http_ready, meterline, wait_until

ROOT = Path(__file__).parents[2]


def readme_block(heading: str) -> list[str]:
    """The command lines of the first indented code block under ``heading``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(heading)
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("    "):
            block.append(line[4:])
        elif block and line.strip():
            break
    return block


def _answers(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
        except grpc.FutureTimeoutError:
            return False
        return True


def _usage_events(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        return len(stub.ListUsageEvents(usage_pb2.ListUsageEventsRequest()).usage_events)


def test_running_it_yourself(processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = readme_block("### 2. Running it yourself")
    assert [shlex.split(line, comments=True)[:2] for line in block] == [
        ["meterline", "fake-provider"],
        ["meterline", "controlplane"],
        ["meterline", "apply"],
        ["meterline", "dataplane"],
        ["python", "examples/chat.py"],
        ["meterline", "usage"],
        ["meterline", "invoice"],
    ]
    fake, cp, dp = free_port(), f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    # Given a working directory with the examples, the fake's port in the walkthrough file
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    walkthrough = work / "examples" / "walkthrough.yaml"
    walkthrough.write_text(walkthrough.read_text().replace("127.0.0.1:8900", f"127.0.0.1:{fake}"))
    # The default state directory, as an ordinary user has it (root's default is
    # /var/lib/meterline: tests running as root name the same directory explicitly)
    monkeypatch.delenv("METERLINE_STATE_DIR")
    if os.geteuid() == 0:
        monkeypatch.setenv("METERLINE_STATE_DIR", str(tmp_path / "state" / "meterline"))
    env = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "METERLINE_FAKE_PROVIDER_PORT": str(fake),
        "METERLINE_CONTROLPLANE_LISTEN": cp,
        "METERLINE_DATAPLANE_LISTEN": dp,
        "METERLINE_CP": cp,
        "METERLINE_GATEWAY": f"http://{dp}",
    }
    outputs: dict[str, str] = {}
    for line in block:
        command = shlex.split(line.replace("127.0.0.1:50051", cp), comments=True)
        background = command[-1] == "&"
        command = command[:-1] if background else command
        program = ["-m", "controlplane", *command[1:]] if command[0] == "meterline" else command[1:]
        if background:
            processes.start(command[1], *program, env=env, insecure_dev=False, cwd=work)
            if command[1] == "fake-provider":
                wait_until(
                    lambda: http_ready(f"http://127.0.0.1:{fake}/_fake/requests", {200}),
                    what="fake provider",
                )
            elif command[1] == "controlplane":
                wait_until(lambda: _answers(cp), what="control plane")
            elif command[1] == "dataplane":
                wait_until(
                    lambda: http_ready(f"http://{dp}/nothing-here", {404}), what="data plane"
                )
            continue
        if command[0] == "meterline":
            if command[1:3] == ["usage", "list"]:
                # usage reaches the control plane in batches: wait for the six events
                wait_until(lambda: _usage_events(cp) == 6, what="six usage events")
            done = meterline(*command[1:], env=env, cwd=work)
        else:
            done = subprocess.run(
                [PYTHON, *program],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
                cwd=work,
                timeout=60,
            )
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}\n{processes.logs()}"
        outputs[" ".join(command[:2])] = done.stdout

    # Then three answers, metered and invoiced
    assert outputs["python examples/chat.py"].count("fake reply:") == 3
    listed = outputs["meterline usage"].splitlines()
    assert listed[0].split()[:2] == ["TIME", "SUBJECT"] and len(listed) == 7
    preview = meterline("invoice", "preview", "acme", "--json", env=env)
    invoice = json.loads(preview.stdout)
    lines = invoice["lines"]
    quantities = {line["feature"]: int(line["quantity"]) for line in lines}
    counts = re.findall(r"\((\d+) in, (\d+) out\)", outputs["python examples/chat.py"])
    assert quantities == {
        "input-tokens": sum(int(i) for i, _ in counts),
        "output-tokens": sum(int(o) for _, o in counts),
    }
    assert Decimal(invoice["total"]) > 0
    # and the data plane kept its state in the user's state directory, unprivileged
    assert (tmp_path / "state" / "meterline" / "spool").is_dir()
    assert (work / "meterline.db").stat().st_size > 0  # the default database file
