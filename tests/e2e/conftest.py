"""Whole processes, as a user runs them: control plane, data plane, fake provider, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.processes import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp=tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture(autouse=True)
def _patient_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI gives up on a silent control plane after 2 s; processes started here take longer
    to start on a busy machine, and the tests run the CLI right after starting them."""
    monkeypatch.setenv("METERLINE_CONNECT_TIMEOUT", "30")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, one per test module."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh cookie jar per test, at a desktop size."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    ctx.close()
