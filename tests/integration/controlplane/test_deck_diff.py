"""``meterline diff`` shows, under each entity sync would update, the fields that change
(``path: old -> new``), never a secret's value (stored or from the shell)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.cli.deck_diff import field_changes
from controlplane.cli.main import main

GUIDE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "deck"
    / "kong-docs"
    / "howto--set-up-ai-proxy-with-openai.yaml"
)


async def test_diff_names_each_changed_field_and_hides_secrets(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = ["--cp", harness.address]
    monkeypatch.setenv("DECK_OPENAI_API_KEY", "sk-first-secret")
    assert await asyncio.to_thread(main, ["apply", str(GUIDE), *cp]) == 0
    capsys.readouterr()

    # Unchanged: nothing to change, no field lines.
    assert await asyncio.to_thread(main, ["diff", str(GUIDE), *cp]) == 0
    assert capsys.readouterr().out.startswith("nothing to change")

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        GUIDE.read_text()
        .replace("name: gpt-4o\n", "name: gpt-4o-mini\n")
        .replace("max_tokens: 512", "max_tokens: 256")
        .replace("  - /anything\n", "  - /chat\n")
        .replace("url: http://httpbin.konghq.com/anything", "url: http://httpbin.konghq.com/v2")
    )
    monkeypatch.setenv("DECK_OPENAI_API_KEY", "sk-second-secret")
    assert await asyncio.to_thread(main, ["diff", str(changed), *cp]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:7] == [
        "  updated service example-service",
        '      url: "http://httpbin.konghq.com/anything" -> "http://httpbin.konghq.com/v2"',
        "  updated route example-route",
        '      paths: ["/anything"] -> ["/chat"]',
        "  updated plugin ai-proxy (global)",
        "      config.auth.header_value: (secret changed, not shown)",
        '      config.model.name: "gpt-4o" -> "gpt-4o-mini"',
    ]
    assert "config.model.options.max_tokens: 512 -> 256" in out
    assert "sk-first-secret" not in out and "sk-second-secret" not in out
    # diff changed nothing.
    assert await asyncio.to_thread(main, ["diff", str(GUIDE), *cp]) == 0
    assert "updated" in capsys.readouterr().out  # the shell's key still differs


def test_field_changes_report_unset_fields_and_never_secret_values() -> None:
    old = {"config": {"auth": {"password": "p1"}, "a": 1, "gone": [1]}}
    new = {"config": {"auth": {"password": "p2"}, "a": 2, "added": {"b": True}}}
    assert field_changes(old, new) == [
        "config.a: 1 -> 2",
        "config.added.b: (unset) -> true",
        "config.auth.password: (secret changed, not shown)",
        "config.gone: [1] -> (unset)",
    ]
