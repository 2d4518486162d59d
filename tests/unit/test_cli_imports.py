"""A `meterline` command that only talks to the control plane loads only what it runs: every
call of the CLI pays its imports (1.9 s with the whole control plane and data plane loaded,
0.35 s without, on the 2-core test machine)."""

from __future__ import annotations

import subprocess

import pytest

from support.processes import PYTHON

HEAVY = (
    "sqlalchemy",
    "alembic",
    "cryptography",
    "dataplane.cli",
    "dataplane.proxy.compiler",
    "controlplane.declarative.document",
    "controlplane.storage.db",
)

PROBE = """
import sys
from controlplane.cli.main import build_parser
args = build_parser(dataplane_flags=False).parse_args(sys.argv[1:])
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["credits", "show", "acme"],
        ["invoice", "list"],
        ["apply", "gateway.yaml"],
        ["tokens", "create", "ci", "--scope", "admin"],
        ["pki", "init"],
    ],
)
def test_a_client_command_does_not_import_the_servers(argv: list[str]) -> None:
    done = subprocess.run(
        [PYTHON, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [], done.stdout


def test_dataplane_after_global_options_still_gets_its_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from controlplane.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["-v", "dataplane", "--help"])
    assert exited.value.code == 0
    assert "--cp HOST:PORT" in capsys.readouterr().out
