"""Every CLI flag can come from a METERLINE_* environment variable; the command line wins."""

from __future__ import annotations

import pytest

from controlplane.cli.env import env_names
from controlplane.cli.main import build_parser


def test_env_sets_defaults_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_CONTROLPLANE_LISTEN", "127.0.0.1:6000")
    assert build_parser().parse_args(["controlplane"]).listen == "127.0.0.1:6000"
    args = build_parser().parse_args(["controlplane", "--listen", "127.0.0.1:7000"])
    assert args.listen == "127.0.0.1:7000"


def test_env_satisfies_a_required_flag_and_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dataplane"])  # --cp is required
    monkeypatch.setenv("METERLINE_DATAPLANE_CP", "10.1.2.3:50051")
    monkeypatch.setenv("METERLINE_DATAPLANE_SPOOL_MAX_BYTES", "1234")
    args = build_parser().parse_args(["dataplane"])
    assert (args.cp, args.spool_max_bytes) == ("10.1.2.3:50051", 1234)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [pytest.param("true", True, id="true"), pytest.param("0", False, id="zero")],
)
def test_boolean_flags(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("METERLINE_INVOICE_PREVIEW_JSON", raw)
    assert build_parser().parse_args(["invoice", "preview", "acme"]).json is expected


def test_bad_values_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERLINE_INVOICE_PREVIEW_JSON", "maybe")
    with pytest.raises(SystemExit):
        build_parser()
    assert "METERLINE_INVOICE_PREVIEW_JSON" in capsys.readouterr().err
    monkeypatch.delenv("METERLINE_INVOICE_PREVIEW_JSON")
    monkeypatch.setenv("METERLINE_DATAPLANE_SPOOL_MAX_BYTES", "lots")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dataplane", "--cp", "x:1"])


def test_help_names_the_variables() -> None:
    parser = build_parser()
    names = env_names(parser)
    assert {
        "METERLINE_CONTROLPLANE_DB",
        "METERLINE_DATAPLANE_LISTEN",
        "METERLINE_APPLY_CP",
    } <= names
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert "METERLINE_CONTROLPLANE_DB" in subcommands["controlplane"].format_help()
