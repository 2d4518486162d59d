"""configure_logging writes to the stderr of the moment, and keeps handlers it did not set."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from controlplane.logs import configure_logging
from dataplane.observability.logs import configure_logging as configure_dataplane_logging


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_lines_go_to_the_current_stderr_even_after_the_old_one_closed(
    root_handlers, monkeypatch
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    logging.getLogger("meterline.test").warning("one")
    first.close()  # what a test harness does with a captured stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)

    logging.getLogger("meterline.test").warning("two")

    assert "WARNING meterline.test: two" in second.getvalue()


def test_configuring_twice_leaves_one_meterline_handler_and_keeps_others(root_handlers) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)

    configure_logging(log_format="json")
    configure_dataplane_logging(log_format="json")
    configure_logging(log_format="text", level=logging.DEBUG)

    handlers = logging.getLogger().handlers
    # One Meterline handler, whichever plane (both in one process: the CLI, tests) set it last.
    assert sum(getattr(h, "meterline_handler", False) for h in handlers) == 1
    assert other in handlers
    assert logging.getLogger().level == logging.DEBUG
