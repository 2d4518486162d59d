"""Running Meterline as whole processes, as a user does: servers, fake provider, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check, *, timeout: float = 30.0, what: str) -> None:
    """Poll check() until it is true; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# Processes started by tests run in development mode (plaintext, no tokens) unless a test
# says otherwise: trust is tested on its own (tests/e2e/test_trust.py), every other test
# exercises the feature it names. The variables are the --insecure-dev flags' (controlplane/
# cli/env.py).
DEV_ENV = {"METERLINE_CONTROLPLANE_INSECURE_DEV": "1", "METERLINE_DATAPLANE_INSECURE_DEV": "1"}


def meterline(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the meterline CLI as a user would."""
    return subprocess.run(
        [PYTHON, "-m", "controlplane", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@dataclass
class Processes:
    tmp: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(
        self,
        name: str,
        *cmd: str,
        env: dict[str, str] | None = None,
        insecure_dev: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``python *cmd``; in development mode (DEV_ENV) unless ``insecure_dev`` is off."""
        log = self.tmp / f"{name}.log"
        dev = DEV_ENV if insecure_dev else {k: "0" for k in DEV_ENV}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [PYTHON, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **dev, **(env or {})},
                cwd=cwd,
            )
        self.started.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for _, log in self.started)

    def kill9(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no handler runs, nothing is flushed, as in a crash or an OOM kill."""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process, _ in reversed(self.started):
            process.terminate()
        for process, _ in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def http_ready(url: str, ok: set[int]) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in ok
    except httpx.TransportError:
        return False


def grpc_ready(address: str, timeout: float = 0.5) -> bool:
    """Whether a gRPC server accepts connections at ``address``."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
    return True
