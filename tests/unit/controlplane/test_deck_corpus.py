"""The decK corpus (tests/fixtures/deck): every file parses, reports exactly the notes its
comments list, and gives a snapshot the data plane's own compiler accepts (never a NACK)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import parse_document
from controlplane.declarative.envsubst import resolve
from controlplane.declarative.load import load_text
from dataplane.proxy.compiler import compile_snapshot

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "deck"
FILES = sorted(CORPUS.glob("*.yaml"))
ENV = {
    "DECK_OPENAI_API_KEY": "sk-openai-test",
    "DECK_ANTHROPIC_API_KEY": "sk-ant-test",
    "DECK_AZURE_API_KEY": "azure-test",
    "DECK_LOCAL_KEY": "local-test",
    "DECK_ALICE_KEY": "alice-key",
    "DECK_REDIS_PASSWORD": "redis-pass",
    "DECK_GEMINI_API_KEY": "gemini-test",
}


def expected_notes(text: str) -> set[str]:
    return set(re.findall(r"^# note: (\S+)$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_corpus_file_applies_notes_what_it_does_not_enforce_and_compiles(
    path: Path,
) -> None:
    text = path.read_text()
    config = parse_document(json.dumps(resolve(load_text(text), ENV)))

    noted = {note.split(": accepted, not enforced: ")[0] for note in config.notes}
    assert noted == expected_notes(text)
    assert all(": accepted, not enforced: " in note for note in config.notes)
    built = build_snapshot(config.gateway)
    runtime = compile_snapshot(built.snapshot, version=built.version)
    assert runtime is not None
    # Accepted-but-unenforced fields stay in the control plane: the wire form is typed.
    assert b"kong_unenforced" not in built.snapshot.SerializeToString()


def test_the_corpus_covers_each_plugin_and_route_field() -> None:
    text = "\n".join(path.read_text() for path in FILES)
    for plugin in (
        "key-auth",
        "rate-limiting",
        "rate-limiting-advanced",
        "ai-proxy",
        "ai-proxy-advanced",
        "ai-rate-limiting-advanced",
    ):
        assert f"name: {plugin}\n" in text
    for provider in ("openai", "anthropic", "azure", "gemini"):
        assert f"provider: {provider}" in text
    for field in ("methods", "hosts", "headers", "protocols", "strip_path", "preserve_host"):
        assert f"{field}:" in text


def test_the_walkthrough_file_sends_the_resolved_key_never_the_reference() -> None:
    text = (CORPUS / "ai-proxy-openai-walkthrough.yaml").read_text()
    config = parse_document(json.dumps(resolve(load_text(text), ENV)))
    built = build_snapshot(config.gateway)
    (plugin,) = built.snapshot.plugins
    assert plugin.ai_proxy.auth.header_value == "Bearer sk-openai-test"


def test_the_open_source_rate_limiting_plugin_is_served_as_fixed_windows() -> None:
    text = (CORPUS / "rate-limiting.yaml").read_text()
    config = parse_document(json.dumps(resolve(load_text(text), ENV)))
    built = build_snapshot(config.gateway)
    limits = {p.route_id: p for p in built.snapshot.plugins}
    assert {p.name for p in limits.values()} == {"rate-limiting-advanced"}
    windows = sorted(
        (w.window_size, w.limit) for p in limits.values() for w in p.rate_limiting.windows
    )
    assert windows == [(1, "10"), (60, "5"), (3600, "1000")]
    assert {p.rate_limiting.window_type for p in limits.values()} == {"fixed"}
    assert {p.rate_limiting.identifier for p in limits.values()} == {"consumer", "ip"}
    redis = [p for p in limits.values() if p.rate_limiting.strategy == "redis"]
    assert redis[0].rate_limiting.redis.password == "redis-pass"


def test_route_fields_travel_in_the_snapshot() -> None:
    text = (CORPUS / "routes-and-entities.yaml").read_text()
    config = parse_document(json.dumps(resolve(load_text(text), ENV)))
    (route,) = build_snapshot(config.gateway).snapshot.routes
    assert list(route.hosts) == ["api.example.com", "*.example.org"]
    assert [(h.name, list(h.values)) for h in route.headers] == [("x-team", ["blue", "green"])]
    assert route.preserve_host is True
    assert route.regex_priority == 10
    assert route.path_handling == "v1"
    assert route.strip_path is False
    assert list(route.methods) == ["POST", "OPTIONS"]
    # select_tags are added to every entity of the file.
    assert config.gateway.routes[0].attributes["tags"] == ["corpus"]
    assert config.gateway.services[0].attributes["tags"] == ["routing", "corpus"]
    # The consumer-group plugin is not applied at all (only noted).
    assert [p.name.value for p in config.gateway.plugins] == ["ai-proxy"]
