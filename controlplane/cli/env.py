"""Every flag of every subcommand can also come from the environment or a config file.

``meterline dataplane --listen`` reads ``METERLINE_DATAPLANE_LISTEN``, ``meterline invoice
preview --json`` reads ``METERLINE_INVOICE_PREVIEW_JSON``, and so on: ``METERLINE_`` + the
subcommand path + the flag, upper-case, dashes as underscores. ``meterline --config FILE`` (or
``METERLINE_CONFIG``) reads a YAML mapping whose keys are the subcommands and, under each, its
flag names (``dataplane: {listen: 0.0.0.0:8000, cp: cp:50051}``, ``invoice: {preview: {json:
true}}``). A flag on the command line wins over the environment, which wins over the file,
which wins over the built-in default. Booleans take 1/true/yes or 0/false/no; repeatable flags
take a comma-separated list (a YAML list in the file). A key the CLI does not know is an error.
``--help`` names each variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

PREFIX = "METERLINE_"
CONFIG_ENV = "METERLINE_CONFIG"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
PRECEDENCE_HELP = (
    "Every flag can also be set as METERLINE_<COMMAND>_<FLAG> in the environment or under the "
    "command's section of `meterline --config FILE` (YAML); the command line wins over the "
    "environment, which wins over the file."
)


class ConfigFileError(Exception):
    """The config file cannot be read, or names something the CLI does not have."""


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version", "config"):
            yield action


def flag_name(action: argparse.Action) -> str:
    """The flag's long name without dashes (``spool-max-bytes``): its key in a config file."""
    return max(action.option_strings, key=len).lstrip("-")


def env_name(path: tuple[str, ...], action: argparse.Action) -> str:
    parts = [*path, flag_name(action)]
    return PREFIX + "_".join(p.upper().replace("-", "_") for p in parts)


def env_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every variable the CLI reads for its flags."""
    return {env_name(path, action) for path, sub in _subparsers(parser) for action in _flags(sub)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config file: a YAML mapping of command sections (empty file: no settings)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigFileError(
            f"{path} must be a mapping of command sections (e.g. `dataplane: {{listen: ...}}`),"
            f" got a {type(document).__name__}"
        )
    return document


def split_config_argument(
    argv: list[str], environ: Mapping[str, str] | None = None
) -> tuple[str | None, list[str]]:
    """Take ``--config FILE`` / ``--config=FILE`` from the front of ``argv`` (before the
    command); fall back to ``$METERLINE_CONFIG``. Return the file (or None) and the rest."""
    environ = os.environ if environ is None else environ
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            raise ConfigFileError("--config needs a FILE")
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--config="):
        return argv[0].split("=", 1)[1], argv[1:]
    return environ.get(CONFIG_ENV) or None, argv


def _section_values(
    parser: argparse.ArgumentParser, section: Any, path: tuple[str, ...]
) -> dict[str, Any]:
    """Check one command section against its parser; return its flag values by flag name."""
    where = ".".join(path)
    if not isinstance(section, dict):
        raise ConfigFileError(f"{where}: expected a mapping of flag names, got {section!r}")
    flags = {flag_name(a): a for a in _flags(parser)}
    children = _children(parser)
    values: dict[str, Any] = {}
    for raw_key, value in section.items():
        key = str(raw_key).replace("_", "-")
        if key in children:
            continue  # a nested command's own section, checked on its own
        if key not in flags:
            known = sorted(flags) + sorted(children)
            raise ConfigFileError(
                f"{where}: unknown key {raw_key!r} (known: {', '.join(known) or 'none'})"
            )
        values[key] = value
    return values


def check_config(
    parser: argparse.ArgumentParser,
    config: Mapping[str, Any],
    *,
    command: tuple[str, ...] | None = None,
) -> None:
    """Refuse keys that name no command or flag (``command``: only that section)."""
    if command is not None:
        section = config.get(command[0]) if len(command) == 1 else None
        if section is not None:
            _section_values(parser, section, command)
        return
    children = _children(parser)
    for raw_key in config:
        if str(raw_key) not in children:
            raise ConfigFileError(
                f"unknown command section {raw_key!r} (commands: {', '.join(sorted(children))})"
            )
    for path, sub in _subparsers(parser):
        section = _lookup(config, path)
        if section is not None:
            _section_values(sub, section, path)


def _lookup(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _file_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A config-file value as the flag's default (strings are converted by argparse)."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            value = value.strip().lower() in TRUE
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where}: expected true or false, got {value!r}")
        return value == isinstance(action, argparse._StoreTrueAction)
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if any(isinstance(i, dict | list | bool) or i is None for i in items):
            raise ConfigFileError(f"{where}: expected a list of values, got {value!r}")
        return [str(i) for i in items]
    if isinstance(value, dict | list | bool) or value is None:
        raise ConfigFileError(f"{where}: expected a single value, got {value!r}")
    return str(value)


def _check_choice(
    sub: argparse.ArgumentParser, action: argparse.Action, value: Any, where: str
) -> None:
    if action.choices is None or not isinstance(value, str):
        return
    if value not in action.choices:
        sub.error(f"{where} must be one of {sorted(action.choices)}, got {value!r}")


def apply_env_defaults(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    *,
    command: tuple[str, ...] | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Make each flag default to its config-file value, then to its environment variable,
    and say so in --help.

    ``command`` names the subcommand ``parser`` itself stands for, when it is not the root.
    Raise ConfigFileError for a config key that names no command or flag.
    """
    environ = os.environ if environ is None else environ
    config = config or {}
    check_config(parser, config, command=command)
    parsers = [(command, parser)] if command is not None else list(_subparsers(parser))
    if command is None:
        parser.epilog = parser.epilog or PRECEDENCE_HELP
    for path, sub in parsers:
        sub.epilog = sub.epilog or PRECEDENCE_HELP
        section = _lookup(config, path)
        file_values = _section_values(sub, section, path) if section is not None else {}
        for action in _flags(sub):
            name = env_name(path, action)
            action.help = f"{action.help or ''} [env {name}]".strip()
            key = flag_name(action)
            if key in file_values:
                where = f"config {'.'.join(path)}.{key}"
                action.default = _file_value(action, file_values[key], where)
                _check_choice(sub, action, action.default, where)
                action.required = False
            raw = environ.get(name)
            if raw is None:
                continue
            if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
                value = raw.strip().lower()
                if value not in TRUE | FALSE:
                    sub.error(f"{name} must be one of {sorted(TRUE | FALSE)}, got {raw!r}")
                action.default = (value in TRUE) == isinstance(action, argparse._StoreTrueAction)
            elif isinstance(action, argparse._AppendAction):
                action.default = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                # argparse converts a string default with the action's type, as if typed.
                action.default = raw
                _check_choice(sub, action, raw, name)
            action.required = False
