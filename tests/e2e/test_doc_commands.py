"""Every command the README and docs/ show is run by a test.

The command blocks of README.md and docs/*.md are collected here. A few are run by the test
named for them in ``ELSEWHERE`` (the quick start's by tests/e2e/test_readme_quickstart.py, the
CLI tour by tests/integration/controlplane/test_cli_docs.py, ...); every other block runs here,
as written, in bash, one script per page, against the README quick start's gateway (a fake
provider, a control plane, examples/walkthrough.yaml, a data plane), from a copy of the
repository's examples/.

Only addresses change: the fixed ports and hosts the docs name (127.0.0.1:50051, cp.internal,
0.0.0.0:8000, ...) become free loopback ports, the production database URL becomes a SQLite
file and /var/lib/meterline a temporary directory. A server the docs start in the foreground
(`meterline controlplane ...`) is started in the background and waited for. A block with a
placeholder left in it (`...`, `[--flag]`, `CUSTOMER`) fails: docs show commands that run.
A benchmark's command (`python bench/...`), which takes minutes at the scale the docs quote, is
checked instead: its script loads and accepts every flag the page gives it (the benchmarks' own
harnesses are the tests' fixtures, run by the suite).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.processes import PYTHON, free_port, http_ready, meterline, wait_until

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = {"meterline", "python", "python3", "export", "pip", "curl", "source", "cd", "cp"}
SERVERS = ("controlplane", "dataplane", "fake-provider", "serve")


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository
    heading: str
    lines: tuple[str, ...]  # continuation lines joined

    def __str__(self) -> str:
        return f"{self.page} / {self.heading}: {self.lines[0]}"


def _is_command(line: str) -> bool:
    words = line.split()
    return bool(words) and (words[0] in PROGRAMS or words[0].lstrip("(") == "command")


def blocks(page: Path) -> list[Block]:
    """The command blocks of a page: indented or fenced (sh, bash, shell, console or none)."""
    found: list[Block] = []
    heading, fence, current = "", None, []
    text = page.read_text().splitlines()

    def close() -> None:
        joined: list[str] = []
        for line in current:
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1].rstrip() + " " + line.strip()
            else:
                joined.append(line.rstrip())
        commands = [line for line in joined if line.strip() and not line.lstrip().startswith("#")]
        if commands and all(_is_command(line) for line in commands):
            found.append(Block(str(page.relative_to(ROOT)), heading, tuple(commands)))
        current.clear()

    for number, line in enumerate([*text, ""]):
        if fence is not None:
            if line.strip().startswith("```"):
                if fence in {"sh", "bash", "shell", "console", ""}:
                    close()
                current.clear()
                fence = None
            else:
                current.append(line.strip())
            continue
        if line.strip().startswith("```"):
            fence = line.strip()[3:].strip()
            continue
        previous = text[number - 1] if number else ""
        if line.startswith("    ") and (current or not previous.strip()):
            if not current and not _is_command(line.strip()):
                continue  # an indented list continuation, not a code block
            current.append(line[4:])
            continue
        if current and line.strip():
            close()
        elif current and not line.strip():
            nxt = text[number + 1] if number + 1 < len(text) else ""
            if not nxt.startswith("    "):
                close()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return found


# Blocks that another test runs, and the test. Each named test file must mention the heading
# (so renaming a section without updating its test fails here).
ELSEWHERE = {
    ("README.md", "The two commands"): "tests/e2e/test_demo.py",
    ("README.md", "2. Running it yourself"): "tests/e2e/test_readme_quickstart.py",
    ("docs/cli.md", "A tour"): "tests/integration/controlplane/test_cli_docs.py",
    ("docs/cli.md", "Shell completion"): "tests/integration/controlplane/test_cli_docs.py",
    ("docs/console.md", "Try it"): "tests/e2e/test_console_demo.py",
}
# The README's first block installs the package and runs the suite: .ci/run does exactly that
# on a fresh clone (and test_demo.py runs `meterline demo`).
CI_RUN = ROOT / ".ci" / "run"


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def test_every_block_is_run_somewhere() -> None:
    found = all_blocks()
    assert len(found) >= 10, [str(b) for b in found]
    for block in found:
        test = ELSEWHERE.get((block.page, block.heading))
        if test is None:
            assert block in RUN_HERE, f"no test runs {block}"
            continue
        heading = block.heading.split(". ", 1)[-1]
        assert heading in (ROOT / test).read_text() or block.heading in (ROOT / test).read_text(), (
            f"{test} does not name {block.heading!r}"
        )
    ci = CI_RUN.read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and "python -m pytest -q" in ci


RUN_HERE = [b for b in all_blocks() if (b.page, b.heading) not in ELSEWHERE]
PLACEHOLDER = re.compile(r"\.\.\.|\[--|\b[A-Z][A-Z_]{3,}\b(?![=\"'])")


def test_no_placeholders_in_commands() -> None:
    for block in RUN_HERE:
        for line in block.lines:
            code = line.split(" #", 1)[0]
            code = re.sub(r"\$\{?[A-Z_]+\}?|[A-Z_]+=|\"[^\"]*\"|'[^']*'", "", code)
            assert not PLACEHOLDER.search(code), f"placeholder in {block.page}: {line}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The README quick start's gateway, started as the README starts it."""
    from support.processes import Processes

    tmp = tmp_path_factory.mktemp("docs")
    processes = Processes(tmp=tmp)
    work = tmp / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    ports = {name: free_port() for name in ("fake", "cp", "dp")}
    walkthrough = work / "examples" / "walkthrough.yaml"
    walkthrough.write_text(
        walkthrough.read_text().replace("127.0.0.1:8900", f"127.0.0.1:{ports['fake']}")
    )
    env = {
        "XDG_STATE_HOME": str(tmp / "state"),
        "METERLINE_STATE_DIR": str(tmp / "state" / "meterline"),
        "METERLINE_FAKE_PROVIDER_PORT": str(ports["fake"]),
        "METERLINE_CONTROLPLANE_LISTEN": f"127.0.0.1:{ports['cp']}",
        "METERLINE_DATAPLANE_LISTEN": f"127.0.0.1:{ports['dp']}",
        "METERLINE_CP": f"127.0.0.1:{ports['cp']}",
        "METERLINE_GATEWAY": f"http://127.0.0.1:{ports['dp']}",
        "METERLINE_CONNECT_TIMEOUT": "30",
    }
    try:
        processes.start("fake", "-m", "controlplane", "fake-provider", env=env, cwd=work)
        processes.start("cp", "-m", "controlplane", "controlplane", env=env, cwd=work)
        done = meterline("apply", "examples/walkthrough.yaml", env=env, cwd=work)
        assert done.returncode == 0, done.stderr + processes.logs()
        processes.start(
            "dp", "-m", "controlplane", "dataplane", "--cp", env["METERLINE_CP"], env=env, cwd=work
        )
        wait_until(
            lambda: http_ready(f"http://127.0.0.1:{ports['dp']}/readyz", {200}),
            what="data plane",
        )
        yield work, env, ports, processes
    finally:
        processes.stop_all()


PRELUDE = """
set -euo pipefail
meterline() { "$PYTHON" -m controlplane "$@"; }
python() { "$PYTHON" "$@"; }
python3() { "$PYTHON" "$@"; }
ready() {  # wait until HOST:PORT accepts connections (a server the page started)
  "$PYTHON" - "$1" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on {sys.argv[1]}")
        time.sleep(0.1)
PY
}
bench() {  # a figure's command: its script loads and takes every flag the page gives it
  local help
  help="$("$PYTHON" "$@" --help)"
  for word in "${@:2}"; do
    case "$word" in
      --*) grep -q -- "${word%%=*}" <<<"$help" || { echo "$1: no flag $word"; exit 1; } ;;
    esac
  done
}
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"""


def _script(lines: list[str], subst: dict[str, str]) -> str:
    out = [PRELUDE]
    for line in lines:
        for old, new in subst.items():
            line = line.replace(old, new)
        code = line.split(" #", 1)[0].rstrip()
        words = code.split()
        if words[:1] == ["meterline"] and (
            any(w in SERVERS for w in words[1:2]) or words[1:3] == ["demo", "--serve"]
        ):
            if words[1] == "fake-provider" and "--port" not in words:
                code = code.removesuffix("&").rstrip() + f" --port {free_port()}"
            # exec'd by the background job itself (so the trap's kill reaches it), its output
            # in a log file (so nothing holds the script's pipes open once it ends)
            server = (
                code.removesuffix("&").rstrip().replace("meterline", '"$PYTHON" -m controlplane', 1)
            )
            out.append(f"{server} > server-{len(out)}.log 2>&1 &")
            listens = re.findall(r"--(?:console-|cluster-)?listen[ =](\S+)", code)
            port = re.findall(r"--port[ =](\d+)", code)
            out += [f"ready {address}" for address in listens]
            out += [f"ready 127.0.0.1:{p}" for p in port]
            continue
        if words[:1] in (["python"], ["python3"]) and words[1:2] and words[1].startswith("bench/"):
            # Benchmarks take minutes at the scale the docs quote: checked, not run, here.
            code = "bench " + code.split(None, 1)[1]
        out.append(code)
    return "\n".join(out) + "\n"


def _substitutions(tmp: Path, ports: dict[str, int]) -> dict[str, str]:
    cp, dp, fake = ports["cp"], ports["dp"], ports["fake"]
    deployed = {name: free_port() for name in ("op", "cluster", "edge", "console", "otel")}
    return {
        "postgresql+psycopg://meterline@db.internal/meterline": f"sqlite:///{tmp}/deployed.db",
        "cp.internal:50051": f"localhost:{deployed['op']}",
        "cp.internal:50052": f"localhost:{deployed['cluster']}",
        "cp.internal": "localhost",
        "0.0.0.0:50051": f"127.0.0.1:{deployed['op']}",
        "0.0.0.0:50052": f"127.0.0.1:{deployed['cluster']}",
        "0.0.0.0:8000": f"127.0.0.1:{deployed['edge']}",
        "localhost:8000": f"127.0.0.1:{deployed['edge']}",
        "127.0.0.1:50051": f"127.0.0.1:{cp}",
        "127.0.0.1:8000": f"127.0.0.1:{dp}",
        "127.0.0.1:8900": f"127.0.0.1:{fake}",
        "127.0.0.1:8080": f"127.0.0.1:{deployed['console']}",
        "127.0.0.1:8001": f"127.0.0.1:{free_port()}",
        "--port 8901": f"--port {free_port()}",
        "http://otel-collector:4318": f"http://127.0.0.1:{deployed['otel']}",
        "http://otel-collector:4317": f"http://127.0.0.1:{deployed['otel']}",
        "/var/lib/meterline": str(tmp / "var-lib-meterline"),
    }


# What a page's commands must print, beyond exiting 0.
EXPECT = {
    "README.md": ["would change 2 entities", "updated plugin ai-proxy", '${{ env "DECK_'],
    "docs/billing.md": ['"region": "eu"'],
    "docs/security.md": ["ready", "in_sync"],
}


@pytest.mark.parametrize(
    "page", sorted({b.page for b in RUN_HERE}, key=lambda p: (p == "README.md", p))
)
def test_the_page_runs(page: str, stack) -> None:
    work, env, ports, _processes = stack
    lines = [line for block in RUN_HERE if block.page == page for line in block.lines]
    tmp = work / f"run-{Path(page).stem}"
    tmp.mkdir()
    shutil.copytree(work / "examples", tmp / "examples")
    (tmp / "bench").symlink_to(ROOT / "bench")  # the figures' commands, and what they import
    (tmp / "tests").symlink_to(ROOT / "tests")
    script = _script(lines, _substitutions(tmp, ports))
    (tmp / "script.sh").write_text(script)
    # Servers the page starts itself get their own addresses and state; the CLI's commands go
    # to the quick start's control plane unless the page says otherwise.
    own = {
        "METERLINE_CONTROLPLANE_LISTEN": f"127.0.0.1:{free_port()}",
        "METERLINE_DATAPLANE_LISTEN": f"127.0.0.1:{free_port()}",
        "METERLINE_STATE_DIR": str(tmp / "state"),
        "XDG_STATE_HOME": str(tmp / "xdg-state"),
    }
    done = subprocess.run(
        ["bash", str(tmp / "script.sh")],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={**os.environ, **env, **own, "PYTHON": PYTHON},
        timeout=120,
    )
    logs = "".join(f"--- {log.name}\n{log.read_text()}" for log in sorted(tmp.glob("server-*.log")))
    assert done.returncode == 0, f"{script}\n--- out\n{done.stdout}\n--- err\n{done.stderr}{logs}"
    printed = (
        done.stdout
        + done.stderr
        + "".join(p.read_text() for p in tmp.glob("*.yaml") if p.is_file())
    )
    for expected in EXPECT.get(page, []):
        assert expected in printed, f"{page}: {expected!r} not in\n{printed}"
