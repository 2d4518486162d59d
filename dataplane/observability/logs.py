"""Log output of the data plane: human text, or one JSON object per line.

JSON lines carry ``time``, ``level``, ``logger``, ``message`` and, for a line logged while
serving a request, that request's ``request_id`` (the ``x-request-id`` response header and
``LlmTokens.request_id`` of its usage events). The request id travels in a context variable
that the gateway sets once per request; every request runs in its own asyncio task, so the
value never leaks into another request's lines or into background tasks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextvars import ContextVar
from typing import Any, Final

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

REQUEST_ID: ContextVar[str | None] = ContextVar("meterline_request_id", default=None)


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format text|json``."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text for people, json for log pipelines: one object per line with time, level, "
        "logger, message (and request_id on the data plane) (default: %(default)s)",
    )


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: time (RFC 3339, UTC), level, logger, message, request_id."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        request_id = REQUEST_ID.get()
        if request_id is not None:
            log_data["request_id"] = request_id


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonLineFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {log_format!r} (one of {', '.join(LOG_FORMATS)})")


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to the ``sys.stderr`` of the moment it is emitted.

    A handler holding the stderr of the moment it was made keeps writing to it after it is
    replaced and closed (as a test harness does when it captures output), and every later log
    line then fails with "I/O operation on closed file".
    """

    # The control plane's handler carries the same mark: in one process (the CLI starting a
    # data plane, tests) each plane replaces the other's handler instead of adding a second.
    meterline_handler = True

    @property
    def stream(self):  # type: ignore[no-untyped-def]
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


def configure_logging(*, log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr in ``log_format``, replacing the handler set before."""
    handler = StderrHandler()
    handler.setFormatter(formatter(log_format))
    install_handler(handler, level)
