"""Every flag of every subcommand can also come from the environment.

``meterline dataplane --listen`` reads ``METERLINE_DATAPLANE_LISTEN``, ``meterline invoice
preview --json`` reads ``METERLINE_INVOICE_PREVIEW_JSON``, and so on: ``METERLINE_`` + the
subcommand path + the flag, upper-case, dashes as underscores. A flag on the command line wins
over the environment, which wins over the built-in default. Booleans take 1/true/yes or
0/false/no; repeatable flags take a comma-separated list. ``--help`` names each variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping

PREFIX = "METERLINE_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


def _flags(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            yield action


def env_name(path: tuple[str, ...], action: argparse.Action) -> str:
    flag = max(action.option_strings, key=len).lstrip("-")
    parts = [*path, flag]
    return PREFIX + "_".join(p.upper().replace("-", "_") for p in parts)


def env_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every variable the CLI reads for its flags."""
    return {env_name(path, action) for path, sub in _subparsers(parser) for action in _flags(sub)}


def apply_env_defaults(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    *,
    command: tuple[str, ...] | None = None,
) -> None:
    """Make each flag default to its environment variable, and say so in --help.

    ``command`` names the subcommand ``parser`` itself stands for, when it is not the root.
    """
    environ = os.environ if environ is None else environ
    parsers = [(command, parser)] if command is not None else list(_subparsers(parser))
    for path, sub in parsers:
        for action in _flags(sub):
            name = env_name(path, action)
            action.help = f"{action.help or ''} [env {name}]".strip()
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
            action.required = False
