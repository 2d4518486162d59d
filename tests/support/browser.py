"""The console's browser tests: Debian's Chromium driven by Playwright, operator tokens, sign-in."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page

from support.processes import meterline

# Playwright's own browser download does not work on these machines: Debian's Chromium.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def operator_tokens(tokens_file: Path) -> dict[str, str]:
    """An admin and a read token created with the CLI into ``tokens_file``, by scope."""
    created = {}
    for name, scope in (("ops", "admin"), ("viewer", "read")):
        result = meterline("tokens", "create", name, "--scope", scope, "--file", str(tokens_file))
        assert result.returncode == 0, result.stderr
        created[scope] = result.stdout.strip()
    return created


def sign_in(page: Page, console: str, token: str) -> None:
    """Sign in on the console's sign-in page; lands on the overview."""
    page.goto(f"{console}/signin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/overview$"))
