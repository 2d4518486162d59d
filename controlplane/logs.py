"""Log output of the control plane and the CLI: human text, or one JSON object per line
(``time``, ``level``, ``logger``, ``message``; exceptions as ``exc_info``)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final, TextIO

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes each record to the ``sys.stderr`` of the moment it is emitted.

    A handler holding the stderr of the moment it was made keeps writing to it after it is
    replaced and closed (as a test harness does when it captures output).
    """

    # The data plane's handler carries the same mark (dataplane.observability.logs): in one
    # process each plane replaces the other's handler instead of adding a second one.
    meterline_handler = True

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def install_handler(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the one Meterline handler on the root logger (others are kept)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "meterline_handler", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format text|json``."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text for people, json for log pipelines: one object per line with time, level, "
        "logger, message (default: %(default)s)",
    )


def json_formatter() -> logging.Formatter:
    """time (RFC 3339, UTC), level, logger, message."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure_logging(*, log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr in ``log_format``, replacing earlier handlers."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (one of {', '.join(LOG_FORMATS)})")
    handler = StderrHandler()
    text = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(json_formatter() if log_format == "json" else text)
    install_handler(handler, level)
    # Alembic narrates every migration step at INFO (~20 lines at each start): detail for -v.
    alembic_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    logging.getLogger("alembic").setLevel(alembic_level)
