"""One validation: apply checks the gateway config a file leaves with the data plane's own
compiler (injected as ``meterline controlplane`` injects it), so a config that passes apply
never makes a data plane NACK; a refusal changes nothing, under --validate-only too.

The case the declarative checks cannot see: a file with an ai-proxy-advanced plugin for a
service that already has an ai-proxy stored (from an earlier apply, not listed in this file).
Each document alone is valid; together they are two ai-proxy plugins on one scope, which every
data plane refuses.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.fernet import Fernet

from controlplane.configsync.snapshot import entity_id
from controlplane.declarative.envsubst import resolve
from controlplane.declarative.load import load_text
from controlplane.gateway.secrets import SEALED_PREFIX, SecretBox
from dataplane.errors import CompileError
from dataplane.proxy.compiler import check_snapshot, compile_isolating, compile_snapshot
from meterline.admin.v1 import gateway_pb2
from meterline.dataplane.v1 import config_pb2, snapshot_pb2

from .conftest import running_harness
from .test_deck_workflow import CORPUS, ENV, apply
from .test_kong_docs_corpus import FILES as KONG_FILES
from .test_kong_docs_corpus import REFUSED as KONG_REFUSED
from .test_kong_docs_corpus import _document as kong_document

PROXY = """\
_format_version: "3.0"
services:
  - name: ai
    url: http://127.0.0.1:9/
    routes:
      - {name: chat, paths: [/chat]}
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: Bearer sk-one}
          model: {provider: openai, name: gpt-4o}
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
"""

# Valid alone; beside PROXY's stored ai-proxy (which it does not list) a second ai-proxy.
ADVANCED = """\
_format_version: "3.0"
services:
  - name: ai
    url: http://127.0.0.1:9/
    routes:
      - {name: chat, paths: [/chat]}
      - {name: extra, paths: [/extra]}
    plugins:
      - name: ai-proxy-advanced
        config:
          targets:
            - route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: Bearer sk-two}
              model: {provider: openai, name: gpt-4o-mini}
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
  - username: newcomer
plugins:
  - name: key-auth
"""


async def _pushed(harness: Any) -> config_pb2.ConfigResponse:
    """The first snapshot a data plane connecting now receives."""
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-check", hostname="h")))
    try:
        return await asyncio.wait_for(call.read(), 5)
    finally:
        call.cancel()


async def _gateway_state(harness: Any) -> tuple[list[str], list[str], list[str], str]:
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    return (
        sorted(r.route_name for r in routes.routes),
        sorted(f"{p.plugin_name}:{p.service}" for p in plugins.plugins),
        sorted(c.username for c in consumers.consumers),
        await harness.cp.hub.current_version(),
    )


async def test_without_the_compiler_the_declarative_checks_accept_what_data_planes_refuse(
    harness,
) -> None:
    # Given the control plane without an injected compiler (as before)...
    await apply(harness, PROXY)
    # ...the second file passes every declarative check...
    response = await apply(harness, ADVANCED)
    assert "created plugin ai-proxy-advanced (ai)" in response.changes
    # ...and the snapshot it leaves is refused by the data plane's compiler: a whole-gateway
    # NACK. This is what the injected compiler prevents (below).
    pushed = await _pushed(harness)
    with pytest.raises(CompileError, match='a second "ai-proxy" plugin on the same scope'):
        compile_snapshot(pushed.snapshot, version=pushed.version_info)


@pytest.fixture
async def checked(db_url: str):
    """A control plane whose apply checks with the data plane's own compiler."""
    async with running_harness(db_url, validate_snapshot=check_snapshot) as running:
        yield running


async def test_apply_refuses_what_data_planes_would_nack_naming_the_entry_and_changes_nothing(
    checked,
) -> None:
    await apply(checked, PROXY)
    before = await _gateway_state(checked)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await apply(checked, ADVANCED)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details() or ""
    # The plugin by its decK name and scope (not the snapshot's id), and why.
    assert 'ai-proxy-advanced plugin for service "ai"' in message, message
    assert 'a second "ai-proxy" plugin on the same scope' in message, message
    assert entity_id("plugin", "ai-proxy-advanced", "ai", "", "") not in message
    assert "nothing was changed" in message
    # Nothing of the file is stored: no route "extra", no consumer "newcomer", no plugin.
    assert await _gateway_state(checked) == before
    assert before[0] == ["chat"] and before[2] == ["acme-corp"]
    # And what data planes receive still compiles whole.
    pushed = await _pushed(checked)
    assert compile_isolating(pushed.snapshot, version=pushed.version_info).refused == ()


async def test_validate_only_refuses_too_and_sync_which_removes_the_stored_plugin_passes(
    checked,
) -> None:
    await apply(checked, PROXY)
    before = await _gateway_state(checked)
    # --validate-only (apply) refuses as apply does.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await apply(checked, ADVANCED, validate_only=True)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'ai-proxy-advanced plugin for service "ai"' in (refused.value.details() or "")
    assert await _gateway_state(checked) == before
    # diff (sync --validate-only): sync removes the ai-proxy the file no longer lists, so the
    # gateway it leaves compiles; nothing is stored.
    diff = await apply(checked, ADVANCED, validate_only=True, sync=True)
    assert "created plugin ai-proxy-advanced (ai)" in diff.changes
    assert any("ai-proxy" in change and "delete" in change for change in diff.changes)
    assert await _gateway_state(checked) == before
    # sync stores it, and data planes receive a snapshot they compile whole.
    await apply(checked, ADVANCED, sync=True)
    routes, plugins, consumers, version = await _gateway_state(checked)
    assert routes == ["chat", "extra"] and consumers == ["acme-corp", "newcomer"]
    assert plugins == ["ai-proxy-advanced:services/ai", "key-auth:"]
    assert version != before[3]
    pushed = await _pushed(checked)
    assert compile_isolating(pushed.snapshot, version=pushed.version_info).refused == ()


async def test_the_compiler_is_called_with_the_snapshot_data_planes_then_receive(
    db_url: str,
) -> None:
    seen: list[snapshot_pb2.Snapshot] = []

    def recording(snapshot: snapshot_pb2.Snapshot) -> None:
        seen.append(snapshot)
        check_snapshot(snapshot)

    async with running_harness(db_url, validate_snapshot=recording) as harness:
        await apply(harness, PROXY)
        assert len(seen) == 1
        pushed = await _pushed(harness)
    # The gateway part of what the data plane receives is exactly what was checked (the
    # consumers' entitlement state, computed from billing data, is not part of the check).
    received = snapshot_pb2.Snapshot()
    received.CopyFrom(pushed.snapshot)
    received.ClearField("consumer_entitlements")
    received.ClearField("balance_slices")
    assert received == seen[0]
    assert [r.name for r in received.routes] == ["chat"] and len(received.plugins) == 2


async def test_a_refusal_names_stored_entities_by_decK_name_and_says_which_the_file_lists(
    db_url: str,
) -> None:
    key_auth = entity_id("plugin", "key-auth", "", "", "")
    proxy = entity_id("plugin", "ai-proxy", "ai", "", "")
    consumer = entity_id("consumer", "acme-corp")
    refusing = False

    def validator(snapshot: snapshot_pb2.Snapshot) -> None:
        if refusing:
            raise ValueError(
                f'plugin "{key_auth}": no\n'
                f'route "chat": plugin "{proxy}": not either\n'
                f'plugin "{key_auth}": anonymous consumer "{consumer}" is not in the snapshot'
            )

    async with running_harness(db_url, validate_snapshot=validator) as harness:
        await apply(harness, PROXY)
        before = await _gateway_state(harness)
        refusing = True
        # A file listing only the global key-auth (apply keeps the rest stored).
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await apply(harness, '_format_version: "3.0"\nplugins:\n  - name: key-auth\n')
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        lines = (refused.value.details() or "").splitlines()
        assert lines[1:] == [
            "- key-auth plugin (global): no",
            '- route "chat": ai-proxy plugin for service "ai" (stored; this file does not list '
            "it): not either",
            '- key-auth plugin (global): anonymous consumer "acme-corp" is not in the snapshot',
        ]
        assert await _gateway_state(harness) == before


async def test_every_corpus_file_passes_the_compiler_at_apply(checked) -> None:
    """The decK corpus applies through the compiler-checked apply (each file alone)."""
    for path in sorted(Path(CORPUS).glob("*.yaml")):
        data = resolve(load_text(path.read_text()), ENV)
        response = await apply(checked, data, sync=True)
        assert response.changes, path.name


async def test_every_example_passes_the_compiler_at_apply(checked) -> None:
    """The examples/ files, as the README applies them, through the compiler-checked apply."""
    examples = Path(__file__).parents[3] / "examples"
    names = sorted(path.name for path in examples.glob("*.yaml"))
    assert names
    for name in names:
        text = resolve(load_text((examples / name).read_text()), ENV)
        response = await apply(checked, text, sync=True)
        assert response.changes, name
    pushed = await _pushed(checked)
    assert compile_isolating(pushed.snapshot, version=pushed.version_info).refused == ()


async def test_the_compiler_sees_provider_keys_opened_as_data_planes_receive_them(
    db_url: str,
) -> None:
    seen: list[snapshot_pb2.Snapshot] = []

    def recording(snapshot: snapshot_pb2.Snapshot) -> None:
        seen.append(snapshot)
        check_snapshot(snapshot)

    box = SecretBox([Fernet.generate_key()])
    async with running_harness(db_url, secrets=box, validate_snapshot=recording) as harness:
        await apply(harness, PROXY)
        plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    # Stored sealed (the API shows no plaintext), checked as the plaintext data planes get.
    assert all("sk-one" not in str(plugin.config) for plugin in plugins.plugins)
    (proxy,) = [p for p in seen[0].plugins if p.name == "ai-proxy"]
    assert proxy.ai_proxy.auth.header_value == "Bearer sk-one"
    assert not proxy.ai_proxy.auth.header_value.startswith(SEALED_PREFIX)


async def test_every_kong_docs_file_that_applies_passes_the_compiler_at_apply(checked) -> None:
    """Kong's documented decK files: what the declarative checks accept, the compiler does."""
    applied = 0
    for path in KONG_FILES:
        if path.stem in KONG_REFUSED:
            continue
        response = await apply(checked, json.dumps(kong_document(path)), sync=True)
        assert response.changes, path.name
        applied += 1
    assert applied == len(KONG_FILES) - len(KONG_REFUSED) > 0
