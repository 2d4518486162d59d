"""docs/cli.md as written: its tour runs, in order, against a control plane; every other
command it shows parses, and the completion commands print their scripts."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path

import pytest

from controlplane.cli.main import build_parser, main
from meterline.admin.v1 import gateway_pb2

ROOT = Path(__file__).parents[3]
DOC = ROOT / "docs" / "cli.md"


def blocks() -> dict[str, list[list[str]]]:
    """The indented code blocks of the doc, by the heading they are under."""
    found: dict[str, list[list[str]]] = {}
    heading, block = "", []
    for line in [*DOC.read_text().splitlines(), "#"]:
        if line.startswith("    ") and not line.lstrip().startswith("|"):
            block.append(line[4:])
            continue
        if block and line.strip():
            found.setdefault(heading, []).append(block)
            block = []
        if line.startswith("#"):
            heading = line.lstrip("# ")
    return found


def _command(line: str) -> list[str]:
    """The meterline arguments of a line (`source <(...)` and `> FILE` left out)."""
    text = line.removeprefix("source <(").split(")")[0].split(" > ")[0]
    words = shlex.split(text)
    assert words[0] == "meterline", line
    return words[1:]


def test_every_command_in_the_doc_parses() -> None:
    lines = [line for groups in blocks().values() for block in groups for line in block]
    assert len(lines) >= 25
    parser = build_parser()
    for line in lines:
        parser.parse_args(_command(line))  # argparse exits on an unknown command or flag


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_commands_print_scripts(shell: str, capsys: pytest.CaptureFixture[str]):
    (block,) = blocks()["Shell completion"]
    (line,) = [line for line in block if f"completion {shell}" in line]
    assert main(_command(line)) == 0
    assert "meterline" in capsys.readouterr().out


async def test_the_tour_runs_in_order(
    harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # examples/walkthrough.yaml, as from a clone
    (tour,) = blocks()["A tour"]
    outputs = []
    for line in tour:
        code = await asyncio.to_thread(main, [*_command(line), "--cp", harness.address])
        out, err = capsys.readouterr()
        assert code == 0, f"{line}: {err}"
        outputs.append(out)
    by_line = dict(zip(tour, outputs, strict=True))
    assert "created subscription" in by_line["meterline apply examples/walkthrough.yaml"]
    assert json.loads(by_line["meterline plans get starter -o json"])["key"] == "starter"
    assert by_line["meterline consumers delete acme-corp"] == "deleted consumer acme-corp\n"
    assert by_line["meterline invoices close"].endswith("issued\n")  # no progress off a terminal
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert list(consumers.consumers) == []
