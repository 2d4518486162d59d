"""Provider keys at rest: encrypted in the database, redacted by the operator API, in
plaintext only in the snapshot a data plane receives; rotation and missing keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.gateway import storage as gateway
from controlplane.gateway.secrets import SEALED_PREFIX, SecretBox
from controlplane.storage import schema as s
from meterline.admin.v1 import gateway_pb2
from meterline.dataplane.v1 import config_pb2

from .conftest import Harness, running_harness

PROVIDER_KEY = "Bearer sk-test"


def _stored_ai_proxy_config(harness) -> dict:
    with harness.cp.db.begin() as conn:
        return conn.execute(
            select(s.plugins.c.config).where(s.plugins.c.name == "ai-proxy")
        ).scalar_one()


async def _snapshot(harness) -> config_pb2.ConfigResponse:
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-keys")))
    response = await call.read()
    call.cancel()
    return response


@pytest.fixture
async def keyed_harness(migrated_db_url: str) -> AsyncIterator[Harness]:
    """A control plane built with a secrets key."""
    async with running_harness(
        migrated_db_url, secrets=SecretBox([Fernet.generate_key()])
    ) as harness:
        yield harness


async def test_provider_keys_are_encrypted_redacted_and_synced(keyed_harness, walkthrough) -> None:
    # Given a control plane with a secrets key
    harness = keyed_harness
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))

    # The database holds the provider key encrypted only...
    stored = _stored_ai_proxy_config(harness)
    assert stored["auth"]["header_value"].startswith(SEALED_PREFIX)
    assert "sk-test" not in json.dumps(stored)
    assert stored["auth"]["header_name"] == "Authorization"
    # ...the operator API never returns it...
    plugins = (await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())).plugins
    (ai_proxy,) = [p for p in plugins if p.plugin_name == "ai-proxy"]
    assert ai_proxy.config["auth"]["header_value"] == "<redacted>"
    assert "sk-test" not in str(plugins)
    # ...and the data plane gets it in plaintext in its snapshot.
    snapshot = await _snapshot(harness)
    assert PROVIDER_KEY.encode() in snapshot.snapshot.SerializeToString()

    # Applying the same file again changes nothing, although encryption is not deterministic.
    again = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    assert list(again.changes) == []
    # A changed key is stored (encrypted) and reaches the snapshot.
    changed = walkthrough.replace("Bearer sk-test", "Bearer sk-rotated")
    applied = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=changed))
    assert any("ai-proxy" in c for c in applied.changes)
    assert "sk-rotated" not in json.dumps(_stored_ai_proxy_config(harness))
    with harness.cp.db.begin() as conn:
        plugins = gateway.list_plugins(conn, secrets=harness.cp.secrets)
        (plugin,) = [p for p in plugins if p.name.value == "ai-proxy"]
    assert plugin.config["auth"]["header_value"] == "Bearer sk-rotated"


async def test_rotation_and_rows_stored_before_a_key(harness, walkthrough) -> None:
    # Given provider keys stored in plaintext (no key configured yet: rows older than 0008)
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    assert _stored_ai_proxy_config(harness)["auth"]["header_value"] == PROVIDER_KEY

    # When a key is configured, the start-up pass encrypts them...
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old_box = SecretBox([old_key])
    with harness.cp.db.begin() as conn:
        assert gateway.reseal_plugin_secrets(conn, secrets=old_box) == 1
        assert gateway.reseal_plugin_secrets(conn, secrets=old_box) == 0  # idempotent
    under_old = _stored_ai_proxy_config(harness)["auth"]["header_value"]
    assert under_old.startswith(SEALED_PREFIX)

    # ...and a new first key re-encrypts them; the old key alone then opens nothing.
    with harness.cp.db.begin() as conn:
        assert gateway.reseal_plugin_secrets(conn, secrets=SecretBox([new_key, old_key])) == 1
    with harness.cp.db.begin() as conn:
        plugins = gateway.list_plugins(conn, secrets=SecretBox([new_key]))
        (plugin,) = [p for p in plugins if p.name.value == "ai-proxy"]
        assert plugin.config["auth"]["header_value"] == PROVIDER_KEY
    with harness.cp.db.begin() as conn, pytest.raises(FailedPrecondition, match="does not have"):
        gateway.reseal_plugin_secrets(conn, secrets=old_box)
    # Without any key, encrypted rows are a clear error, not garbage sent to data planes.
    with harness.cp.db.begin() as conn, pytest.raises(FailedPrecondition, match="no secrets key"):
        gateway.reseal_plugin_secrets(conn, secrets=None)


@pytest.mark.parametrize(
    ("keys", "env"),
    [
        pytest.param("not-a-key\n", None, id="file"),
        pytest.param(None, "c2hvcnQ=", id="env"),
    ],
)
def test_bad_secrets_keys_are_refused(tmp_path, keys: str | None, env: str | None) -> None:
    key_file = None
    if keys is not None:
        key_file = tmp_path / "secrets.key"
        key_file.write_text(keys)
    with pytest.raises(InvalidArgument, match="Fernet key"):
        SecretBox.from_sources(key_file=key_file, env_value=env)
    with pytest.raises(InvalidArgument, match="secrets-key-file"):
        SecretBox.from_sources(key_file=tmp_path / "missing.key", env_value=None)
    assert SecretBox.from_sources(key_file=None, env_value=None) is None
