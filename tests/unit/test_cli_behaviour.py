"""CLI behaviour that needs no control plane: an unreachable one, closed pipes, completion,
progress, the fake provider command."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from controlplane.cli import completion
from controlplane.cli.main import build_parser, main
from controlplane.cli.output import humane_time, plural
from controlplane.cli.progress import Progress, elapsed

METERLINE = [sys.executable, "-m", "controlplane"]
CP = ["--cp", "127.0.0.1:1"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("count", "word", "plural_form", "text"),
    [
        pytest.param(1, "route", None, "1 route", id="one"),
        pytest.param(2, "route", None, "2 routes", id="two"),
        pytest.param(0, "route", None, "0 routes", id="zero"),
        pytest.param(1, "entity", "entities", "1 entity", id="irregular-one"),
        pytest.param(3, "entity", "entities", "3 entities", id="irregular-many"),
    ],
)
def test_plural(count: int, word: str, plural_form: str | None, text: str) -> None:
    assert plural(count, word, plural_form) == text


def test_humane_time_drops_microseconds_and_names_the_zone() -> None:
    assert humane_time("2026-12-07T14:03:12.123456Z", utc=True) == "2026-12-07 14:03:12 UTC"
    assert humane_time("", utc=True) == "-"


def test_an_unreachable_control_plane_is_one_line_after_the_default_2_s(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERLINE_CONNECT_TIMEOUT", raising=False)
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    code = main(["customers", "list", "--cp", address])
    waited = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (
        f"error: no control plane answers at {address} (waited 2s); start one with"
        " `meterline controlplane`, or point --cp / $METERLINE_CP at it\n"
    )
    assert 1.9 <= waited < 5


def test_connect_timeout_flag_and_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    assert main(["--connect-timeout", "0.2", "routes", "list", "--cp", address]) == 1
    assert "(waited 0.2s)" in capsys.readouterr().err
    monkeypatch.setenv("METERLINE_CONNECT_TIMEOUT", "0.3")
    assert main(["usage", "list", "--cp", address]) == 1
    assert "(waited 0.3s)" in capsys.readouterr().err


def test_apply_without_a_control_plane_fails_fast_in_a_real_process(tmp_path: Path) -> None:
    doc = tmp_path / "gateway.yaml"
    doc.write_text('_format_version: "3.0"\n')
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [*METERLINE, "--connect-timeout", "0.5", "apply", str(doc), "--cp", address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 8
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: no control plane answers at {address}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def _bash_complete(script: Path, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _meterline;"
        ' printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_completes_nouns_verbs_and_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "meterline.bash"
    script.write_text(capsys.readouterr().out)
    assert _bash_complete(script, "meterline", "cust") == ["customers"]
    assert set(_bash_complete(script, "meterline", "routes", "")) >= {"list", "get", "delete"}
    assert _bash_complete(script, "meterline", "routes", "list", "--out") == ["--output"]
    assert _bash_complete(script, "meterline", "routes", "list", "--output", "") == [
        "table",
        "json",
        "yaml",
    ]
    assert _bash_complete(script, "meterline", "completion", "") == ["bash", "zsh", "fish"]
    assert "fake-provider" in _bash_complete(script, "meterline", "")


def test_zsh_and_fish_scripts_hold_every_command() -> None:
    parser = build_parser()
    paths = [path for path, _, _ in completion.walk(parser)]
    assert "meterline customers list" in paths and "meterline usage list" in paths
    zsh = completion.script("zsh", parser)
    fish = completion.script("fish", parser)
    assert zsh.startswith("#compdef meterline")
    for path in paths:
        assert f'"{path}"' in zsh
        assert f"'{path}'" in fish
    assert "complete -c meterline -n \"test (__meterline_path) = 'meterline routes'\"" in fish
    assert "-l output -r -a 'table json yaml'" in fish
    for shell, text in (("zsh", zsh), ("fish", fish)):
        if shutil.which(shell):  # a syntax check where the shell is installed
            flag = ["-n"] if shell == "zsh" else ["--no-execute"]
            subprocess.run([shell, *flag], input=text, text=True, check=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_is_silent_elsewhere() -> None:
    terminal = _Terminal()
    progress = Progress("usage ingest", stream=terminal)
    progress.update("1000 events sent")
    progress.update("2 events sent")
    progress.done()
    assert terminal.getvalue() == (
        "\rusage ingest: 1000 events sent"
        "\rusage ingest: 2 events sent   "
        "\r" + " " * len("usage ingest: 2 events sent") + "\r"
    )
    pipe = io.StringIO()
    silent = Progress("usage ingest", stream=pipe)
    silent.update("1 event sent")
    silent.done()
    assert pipe.getvalue() == ""


def test_elapsed_shows_seconds_while_a_call_runs() -> None:
    terminal = _Terminal()
    shown = threading.Event()
    original = terminal.write

    def write(text: str) -> int:
        if "closing invoices:" in text:
            shown.set()
        return original(text)

    terminal.write = write  # type: ignore[method-assign]
    with elapsed("closing invoices", stream=terminal, every=0.01):
        assert shown.wait(5)
    assert terminal.getvalue().startswith("\rclosing invoices: 0.")
    assert terminal.getvalue().endswith("\r")


@pytest.mark.parametrize(
    ("provider", "path", "headers", "body", "usage"),
    [
        pytest.param(
            "openai",
            "/v1/chat/completions",
            {"authorization": "Bearer sk-test"},
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]},
            {"prompt_tokens": 5, "completion_tokens": 4},
            id="openai",
        ),
        pytest.param(
            "anthropic",
            "/v1/messages",
            {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello there"}],
            },
            {"input_tokens": 5, "output_tokens": 4},
            id="anthropic",
        ),
    ],
)
def test_fake_provider_command_serves_the_wire_format(
    provider: str, path: str, headers: dict[str, str], body: dict[str, object], usage: dict
) -> None:
    process = subprocess.Popen(
        [*METERLINE, "fake-provider", "--provider", provider, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"fake {provider} provider listening on http://127.0.0.1:")
        url = line.split(" listening on ")[1].split()[0]
        assert f"(upstream_url: {url}{path})" in line
        answer = httpx.post(url + path, headers=headers, json=body, timeout=10)
        assert answer.status_code == 200
        got = json.loads(answer.text)["usage"]
        assert {k: got[k] for k in usage} == usage
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.parametrize(
    ("environ", "root", "expected"),
    [
        pytest.param({"HOME": "/home/ann"}, False, "/home/ann/.local/state/meterline", id="user"),
        pytest.param(
            {"HOME": "/home/ann", "XDG_STATE_HOME": "/xdg"}, False, "/xdg/meterline", id="xdg"
        ),
        pytest.param({"HOME": "/root"}, True, "/var/lib/meterline", id="root"),
        pytest.param({"METERLINE_STATE_DIR": "/srv/dp"}, False, "/srv/dp", id="variable"),
        pytest.param({"METERLINE_STATE_DIR": ""}, True, None, id="empty-variable: nothing"),
    ],
)
def test_default_state_dir(
    environ: dict[str, str], root: bool, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataplane.cli import default_state_dir

    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setenv("HOME", environ.get("HOME", "/nowhere"))
    found = default_state_dir(environ)
    assert (str(found) if found else None) == expected


def test_dataplane_state_dir_flag_defaults_and_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.cli.main import dataplane_parser

    monkeypatch.delenv("METERLINE_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert dataplane_parser().parse_args(CP).state_dir == Path("/xdg/meterline")
    assert dataplane_parser().parse_args([*CP, "--state-dir", ""]).state_dir is None
    assert dataplane_parser().parse_args([*CP, "--state-dir", "/s"]).state_dir == Path("/s")


def test_dockerfile_sets_the_state_dir() -> None:
    text = (Path(__file__).parents[2] / "deploy" / "Dockerfile").read_text()
    assert "ENV METERLINE_STATE_DIR=/var/lib/meterline" in text
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/meterline" in text


def test_control_plane_start_is_one_info_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            *METERLINE,
            "controlplane",
            "--insecure-dev",
            "--db",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        while not any("listening on" in line for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        process.terminate()
        out, rest = process.communicate(timeout=20)
    info = [line for line in lines if " INFO " in line]
    assert len(info) == 1, lines
    assert "control plane listening on 127.0.0.1:" in info[0]
    assert "schema at revision 00" in info[0]
    assert not any("alembic" in line for line in lines + rest.splitlines())
    assert out == ""


def test_migration_detail_is_debug(tmp_path: Path) -> None:
    # (without -v a start shows none of it: test_control_plane_start_is_one_info_line)
    done = subprocess.run(
        [*METERLINE, "-v", "migrate", "--db", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Running upgrade  -> 0001" in done.stderr
    assert done.stdout == "database schema is up to date\n"
