"""Whole processes, as a user runs them: control plane, data plane, fake provider, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp=tmp_path)
    yield procs
    procs.stop_all()
