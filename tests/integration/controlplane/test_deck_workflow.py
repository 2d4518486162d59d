"""decK's workflow against a real in-process control plane: the corpus applies (twice, the
second time changing nothing), sync removes what a file no longer lists (never billing),
select_tags scope it, dump -> apply changes nothing, a provider data planes lack is refused at
apply, and the CLI's apply/diff/sync/dump resolve DECK_ variables from the shell."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from controlplane.cli.main import main
from controlplane.declarative.envsubst import REFERENCE, resolve
from controlplane.declarative.load import load_text
from controlplane.declarative.merge import read_files
from meterline.admin.v1 import customers_pb2, gateway_pb2

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "deck"
ENV = {
    "DECK_OPENAI_API_KEY": "sk-openai-test",
    "DECK_ANTHROPIC_API_KEY": "sk-ant-test",
    "DECK_AZURE_API_KEY": "azure-test",
    "DECK_LOCAL_KEY": "local-test",
    "DECK_ALICE_KEY": "alice-key",
    "DECK_REDIS_PASSWORD": "redis-pass",
    "DECK_GEMINI_API_KEY": "gemini-test",
}
# Files that can live in one gateway together (no two global plugins of a kind, one _info).
TOGETHER = [
    "key-auth.yaml",
    "rate-limiting.yaml",
    "rate-limiting-advanced.yaml",
    "ai-rate-limiting-advanced.yaml",
    "ai-proxy-openai-options.yaml",
    "ai-proxy-anthropic.yaml",
    "ai-proxy-azure.yaml",
    "ai-proxy-self-hosted.yaml",
    "ai-proxy-embeddings-preserve.yaml",
    "ai-proxy-advanced-round-robin.yaml",
    "ai-proxy-advanced-hashing.yaml",
    "ai-proxy-gemini.yaml",
    "enabled-false-and-nulls.yaml",
]


async def apply(harness: Any, data: Any, **flags: bool) -> gateway_pb2.ApplyConfigResponse:
    text = data if isinstance(data, str) else json.dumps(data)
    return await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=text, **flags))


def corpus(*names: str) -> dict[str, Any]:
    return resolve(read_files([str(CORPUS / name) for name in names]), ENV)


async def test_each_corpus_file_applies_and_again_changes_nothing(harness) -> None:
    for path in sorted(CORPUS.glob("*.yaml")):
        data = resolve(load_text(path.read_text()), ENV)
        first = await apply(harness, data, sync=True)
        assert first.changes, path.name
        expected = set(re.findall(r"^# note: (\S+)$", path.read_text(), flags=re.MULTILINE))
        assert {note.split(": accepted")[0] for note in first.notes} == expected, path.name
        again = await apply(harness, data, sync=True)
        assert list(again.changes) == [], path.name


async def test_sync_removes_a_route_the_file_no_longer_lists_and_never_billing(
    harness, walkthrough: str
) -> None:
    await apply(harness, walkthrough)
    data = load_text(walkthrough)
    del data["services"][0]["routes"]
    del data["consumers"]
    del data["billing"]

    diff = await apply(harness, data, sync=True, validate_only=True)
    assert list(diff.changes) == ["deleted route chat", "deleted consumer acme-corp"]
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert [r.route_name for r in routes.routes] == ["chat"]  # diff changed nothing

    synced = await apply(harness, data, sync=True)
    assert list(synced.changes) == list(diff.changes)
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert list(routes.routes) == []
    customers = await harness.customers.ListCustomers(customers_pb2.ListCustomersRequest())
    assert [c.key for c in customers.customers] == ["acme"]
    # apply (not sync) never deletes.
    await apply(harness, walkthrough)
    assert list((await apply(harness, data)).changes) == []
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert [r.route_name for r in routes.routes] == ["chat"]


async def test_sync_with_select_tags_only_touches_tagged_entities(harness) -> None:
    untagged = {
        "_format_version": "3.0",
        "services": [
            {
                "name": "other",
                "url": "http://127.0.0.1:9",
                "routes": [{"name": "other-route", "paths": ["/other"]}],
            }
        ],
    }
    await apply(harness, untagged)
    tagged = corpus("routes-and-entities.yaml")
    await apply(harness, tagged, sync=True)
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert sorted(r.route_name for r in routes.routes) == ["by-host", "other-route"]
    # Kong's route fields are stored as written (and shown by the operator API).
    by_host = next(r for r in routes.routes if r.route_name == "by-host")
    assert list(by_host.attributes["hosts"]) == ["api.example.com", "*.example.org"]
    assert list(by_host.attributes["tags"]) == ["corpus"]
    assert by_host.attributes["preserve_host"] is True

    del tagged["services"][0]["routes"]
    synced = await apply(harness, tagged, sync=True)
    assert list(synced.changes) == ["deleted route by-host"]
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert [r.route_name for r in routes.routes] == ["other-route"]


def _pairs(placeholders: Any, plain: Any) -> dict[str, str]:
    """DECK_ variable -> the value the placeholder dump stands for, from the plain dump."""
    if isinstance(placeholders, dict):
        found: dict[str, str] = {}
        for key, value in placeholders.items():
            found.update(_pairs(value, plain[key]))
        return found
    if isinstance(placeholders, list):
        return {
            k: v for a, b in zip(placeholders, plain, strict=True) for k, v in _pairs(a, b).items()
        }
    if isinstance(placeholders, str) and (match := REFERENCE.fullmatch(placeholders)):
        return {match.group(1): plain}
    return {}


async def test_dump_then_apply_changes_nothing(harness) -> None:
    await apply(harness, corpus(*TOGETHER))

    with_secrets = await harness.gateway.ExportConfig(
        gateway_pb2.ExportConfigRequest(include_secrets=True)
    )
    assert list(with_secrets.secret_variables) == []
    replay = await apply(harness, with_secrets.document, sync=True)
    assert list(replay.changes) == []

    dumped = await harness.gateway.ExportConfig(gateway_pb2.ExportConfigRequest())
    for secret in ENV.values():
        assert secret not in dumped.document
    placeholders, plain = yaml.safe_load(dumped.document), yaml.safe_load(with_secrets.document)
    env = _pairs(placeholders, plain)
    assert sorted(env) == sorted(dumped.secret_variables)
    assert "DECK_AI_PROXY_ROUTE_ANTHROPIC_MESSAGES_AUTH_HEADER_VALUE" in env
    replay = await apply(harness, resolve(placeholders, env), sync=True)
    assert list(replay.changes) == []
    # The dump carries what apply stores: route fields, tags, and unenforced plugin fields.
    openai = next(p for p in plain["plugins"] if p.get("service") == "openai-service")
    assert openai["config"]["model"]["options"]["temperature"] == 1.0
    assert openai["tags"] == ["llm"]
    (alice,) = [c for c in plain["consumers"] if c["username"] == "alice"]
    assert alice["keyauth_credentials"][0]["key_hash"].startswith("sha256:")


async def test_dump_with_select_tags_gives_only_tagged_entities(harness) -> None:
    await apply(harness, corpus("routes-and-entities.yaml"))
    await apply(harness, {"_format_version": "3.0", "consumers": [{"username": "untagged"}]})
    dumped = await harness.gateway.ExportConfig(
        gateway_pb2.ExportConfigRequest(select_tags=["corpus"], include_secrets=True)
    )
    document = yaml.safe_load(dumped.document)
    assert document["_info"] == {"select_tags": ["corpus"]}
    assert [c["username"] for c in document["consumers"]] == ["carol"]
    assert list((await apply(harness, dumped.document, sync=True)).changes) == []


async def test_a_provider_data_planes_lack_is_refused_at_apply_and_nothing_is_stored(
    harness,
) -> None:
    data = corpus("ai-proxy-openai-walkthrough.yaml")
    data["plugins"][0]["config"]["model"]["provider"] = "acme-llm"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(harness, data, validate_only=True)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(
        'plugins[0] (ai-proxy): config.model.provider "acme-llm" is not a provider (supported: '
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await apply(harness, data)
    plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    assert list(plugins.plugins) == []


async def test_the_cli_resolves_deck_variables_and_runs_apply_diff_sync_dump(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = ["--cp", harness.address]
    walkthrough = str(CORPUS / "ai-proxy-openai-walkthrough.yaml")
    monkeypatch.delenv("DECK_OPENAI_API_KEY", raising=False)

    # Missing: refused before anything is sent, also when only validating.
    for flags in ([], ["--validate-only"]):
        code = await asyncio.to_thread(main, ["apply", walkthrough, *flags, *cp])
        assert code == 2
        assert capsys.readouterr().err == (
            "error: plugins[0] (ai-proxy): config.auth.header_value: environment variable "
            "DECK_OPENAI_API_KEY is not set\n"
        )

    monkeypatch.setenv("DECK_OPENAI_API_KEY", "sk-from-the-shell")
    assert await asyncio.to_thread(main, ["apply", walkthrough, *cp]) == 0
    out, err = capsys.readouterr()
    assert "created plugin ai-proxy (global)" in out
    assert err == ""  # logging.log_payloads is honoured: nothing to note
    assert "sk-from-the-shell" not in out + err
    plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    assert plugins.plugins[0].config["auth"]["header_value"] != "Bearer sk-from-the-shell"

    # A directory of files, then dump -> diff shows nothing to change.
    for name, env_name in (("DECK_ALICE_KEY", "alice"), ("DECK_REDIS_PASSWORD", "redis")):
        monkeypatch.setenv(name, f"{env_name}-secret")
    files = tmp_path / "deck"
    files.mkdir()
    for name in ("key-auth.yaml", "rate-limiting.yaml"):
        (files / name).write_text((CORPUS / name).read_text())
    assert await asyncio.to_thread(main, ["apply", str(files), walkthrough, *cp]) == 0
    capsys.readouterr()
    dump = tmp_path / "dump.yaml"
    assert await asyncio.to_thread(main, ["dump", "-o", str(dump), "--with-secrets", *cp]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["diff", str(dump), *cp]) == 0
    assert capsys.readouterr().out.startswith("nothing to change")

    # sync without the rate-limited service's routes removes them.
    document = yaml.safe_load(dump.read_text())
    document["routes"] = [r for r in document["routes"] if r["service"] != "limited"]
    document["plugins"] = [p for p in document["plugins"] if "route" not in p]
    dump.write_text(yaml.safe_dump(document))
    assert await asyncio.to_thread(main, ["sync", str(dump), *cp]) == 0
    out = capsys.readouterr().out
    assert "deleted route limited-chat" in out
    assert "deleted route shared-chat" in out


async def test_the_cli_never_prints_a_resolved_value_even_when_refused(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DECK_UPSTREAM", "ftp://user:hunter2@example.com")
    path = tmp_path / "bad.yaml"
    path.write_text(
        '_format_version: "3.0"\nplugins:\n  - name: ai-proxy\n    config:\n'
        "      model:\n        provider: openai\n"
        "        options: {upstream_url: '${{ env \"DECK_UPSTREAM\" }}'}\n"
    )
    code = await asyncio.to_thread(main, ["apply", str(path), "--cp", harness.address])
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        "error: INVALID_ARGUMENT: plugins[0] (ai-proxy): config.model.options.upstream_url must "
        'be an http(s) URL, got "<DECK_UPSTREAM>"\n'
    )


async def test_sync_refuses_to_delete_a_service_an_unselected_route_still_uses(harness) -> None:
    # A team-a service used by a route of another team.
    await apply(
        harness,
        {
            "_format_version": "3.0",
            "services": [{"name": "shared", "url": "http://127.0.0.1:9", "tags": ["team-a"]}],
            "routes": [{"name": "b-route", "service": "shared", "paths": ["/b"], "tags": ["b"]}],
        },
    )
    emptied = {"_format_version": "3.0", "_info": {"select_tags": ["team-a"]}}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(harness, emptied, sync=True)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        'sync would delete service "shared", which route "b-route" (kept: listed, or without '
        "the select_tags) still uses"
    )
    services = await harness.gateway.ListServices(gateway_pb2.ListServicesRequest())
    assert [s.service_name for s in services.services] == ["shared"]


async def test_a_plugin_goes_with_the_route_sync_deletes_even_without_the_tags(harness) -> None:
    await apply(
        harness,
        {
            "_format_version": "3.0",
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [{"name": "r", "service": "svc", "paths": ["/r"], "tags": ["team-a"]}],
            "plugins": [{"name": "key-auth", "route": "r"}],
        },
    )
    emptied = {"_format_version": "3.0", "_info": {"select_tags": ["team-a"]}}
    synced = await apply(harness, emptied, sync=True)
    assert list(synced.changes) == ["deleted plugin key-auth (r)", "deleted route r"]
    plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    assert list(plugins.plugins) == []
    # The data planes' snapshot still builds (no plugin refers to a deleted route).
    assert (await apply(harness, {"_format_version": "3.0"})).config_version.startswith("sha256:")
