"""`meterline completion bash|zsh|fish`: each script parses in its own shell and completes.

The shells are real (bash, zsh and fish from Debian's packages; .ci/run and the README's test
command install zsh and fish when missing). Each script is loaded as docs/cli.md says, then
asked to complete a partial command line the way the shell's completion system does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.cli.main import main


def _script(shell: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["completion", shell]) == 0
    path = tmp_path / f"meterline.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def _run(*argv: str) -> str:
    assert shutil.which(argv[0]), f"{argv[0]} is not installed (apt-get install -y zsh fish)"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("shell", "check"),
    [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])],
)
def test_the_script_parses_in_its_shell(shell, check, tmp_path, capsys) -> None:
    _run(*check, str(_script(shell, tmp_path, capsys)))


# (words typed so far, the word being completed) -> what must be offered
CASES = [
    (["meterline"], "cus", {"customers"}),
    (["meterline", "credits"], "rech", {"recharge"}),
    (["meterline", "credits", "recharge", "set"], "--thr", {"--threshold"}),
    (["meterline", "fake-provider", "--provider"], "", {"openai", "anthropic"}),
]


@pytest.mark.parametrize(("typed", "partial", "offered"), CASES)
def test_bash_completes(typed, partial, offered, tmp_path, capsys) -> None:
    script = _script("bash", tmp_path, capsys)
    words = " ".join([*typed, partial or "''"])
    out = _run(
        "bash",
        "-c",
        f"source {script}; COMP_WORDS=({words}); COMP_CWORD={len(typed)}; "
        f"COMP_LINE='{' '.join([*typed, partial])}'; _meterline; "
        'printf "%s\\n" "${COMPREPLY[@]}"',
    )
    assert offered <= set(out.split()), out


@pytest.mark.parametrize(("typed", "partial", "offered"), CASES)
def test_zsh_completes(typed, partial, offered, tmp_path, capsys) -> None:
    script = _script("zsh", tmp_path, capsys)
    words = " ".join([*typed, partial or "''"])
    # compinit loads the completion system (compdef); compadd is replaced by a printer and
    # candidates are filtered by the prefix as zsh's matcher would.
    out = _run(
        "zsh",
        "-f",
        "-c",
        f"autoload -U compinit; compinit -u -d {tmp_path}/zcompdump; source {script}; "
        'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }; '
        f"words=({words}); CURRENT={len(typed) + 1}; PREFIX='{partial}'; _meterline",
    )
    candidates = {c for c in out.split() if c.startswith(partial)}
    assert offered <= candidates, out


@pytest.mark.parametrize(("typed", "partial", "offered"), CASES)
def test_fish_completes(typed, partial, offered, tmp_path, capsys) -> None:
    script = _script("fish", tmp_path, capsys)
    line = " ".join([*typed, partial])
    out = _run("fish", "--no-config", "-c", f"source {script}; complete -C '{line}'")
    assert offered <= {row.split("\t")[0] for row in out.splitlines()}, out
