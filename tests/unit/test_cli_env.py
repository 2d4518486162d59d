"""Every CLI flag can come from a METERLINE_* environment variable; the command line wins."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from controlplane.cli.env import (
    CONFIG_ENV,
    ConfigFileError,
    env_names,
    load_config_file,
    split_config_argument,
)
from controlplane.cli.main import build_parser, main


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


# The config file (meterline --config FILE) ------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "meterline.yaml"
    path.write_text(text)
    return str(path)


def parse_with_file(argv: list[str]) -> argparse.Namespace:
    """argv as main() reads it: --config first, then the command."""
    config_file, rest = split_config_argument(argv, environ={})
    config = load_config_file(config_file) if config_file else None
    return build_parser(config).parse_args(rest)


def test_file_values_fill_flags_and_satisfy_required_ones(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
dataplane:
  cp: 10.0.0.1:50052
  listen: 0.0.0.0:8000
  spool_max_bytes: 4096        # underscores or dashes
  log-format: json
controlplane:
  auto-issue: true
invoice:
  preview: {json: true}
""",
    )
    args = parse_with_file(["--config", config, "dataplane"])
    assert (args.cp, args.listen, args.spool_max_bytes, args.log_format) == (
        "10.0.0.1:50052",
        "0.0.0.0:8000",
        4096,
        "json",
    )
    assert parse_with_file([f"--config={config}", "controlplane"]).auto_issue is True
    assert parse_with_file(["--config", config, "invoice", "preview", "acme"]).json is True


def test_precedence_command_line_then_env_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "controlplane: {listen: '127.0.0.1:1111', invoice_grace: PT2H}\n")
    assert parse_with_file(["--config", config, "controlplane"]).listen == "127.0.0.1:1111"
    assert parse_with_file(["controlplane"]).invoice_grace == "PT1H"  # no file: the default
    monkeypatch.setenv("METERLINE_CONTROLPLANE_LISTEN", "127.0.0.1:2222")
    args = parse_with_file(["--config", config, "controlplane"])
    assert (args.listen, args.invoice_grace) == ("127.0.0.1:2222", "PT2H")
    args = parse_with_file(["--config", config, "controlplane", "--listen", "127.0.0.1:3333"])
    assert args.listen == "127.0.0.1:3333"


def test_the_file_may_come_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path, "dataplane: {cp: 'h:1'}\n")
    assert split_config_argument(["dataplane"], environ={CONFIG_ENV: config}) == (
        config,
        ["dataplane"],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("dataplan: {cp: x}\n", "unknown command section 'dataplan'", id="command"),
        pytest.param("dataplane: {lisen: x}\n", "dataplane: unknown key 'lisen'", id="flag"),
        pytest.param(
            "invoice: {preview: {jsn: true}}\n", "invoice.preview: unknown key 'jsn'", id="nested"
        ),
        pytest.param("- dataplane\n", "must be a mapping", id="not-a-mapping"),
        pytest.param("dataplane: [cp]\n", "expected a mapping of flag names", id="section"),
        pytest.param("dataplane: {cp: [a, b]}\n", "expected a single value", id="list"),
        pytest.param("controlplane: {auto_issue: maybe}\n", "expected true or false", id="bool"),
        pytest.param("dataplane: {cp: 'a: [\n", "not valid YAML", id="yaml"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        parse_with_file(["--config", config, "dataplane", "--cp", "x:1"])


def test_a_bad_choice_in_the_file_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "dataplane: {log_format: xml}\n")
    with pytest.raises(SystemExit):
        parse_with_file(["--config", config, "dataplane", "--cp", "x:1"])
    assert "config dataplane.log-format must be one of ['json', 'text']" in capsys.readouterr().err


def test_main_reports_file_errors_and_the_dataplane_parser_checks_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "missing.yaml"), "usage", "list"]) == 2
    assert "cannot read" in capsys.readouterr().err
    config = write(tmp_path, "dataplane: {cp: 'h:1', workers: 0, shards: 2}\n")
    assert main(["--config", config, "dataplane"]) == 2
    assert "dataplane: unknown key 'shards'" in capsys.readouterr().err


def test_help_says_where_flags_come_from() -> None:
    parser = build_parser()
    assert "--config FILE" in parser.format_help()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("controlplane", "dataplane", "apply"):
        assert "wins over the environment, which wins over the file" in " ".join(
            subcommands[name].format_help().split()
        )
