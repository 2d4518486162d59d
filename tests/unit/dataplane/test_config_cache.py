"""The config cache on disk: atomic, owner-only, optionally encrypted, and a stable node id."""

from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from dataplane.config.cache import CacheError, ConfigCache, load_key, stable_node_id
from meterline.dataplane.v1 import config_pb2, snapshot_pb2

SECRET = "Bearer sk-provider-secret-in-cache"


def response(version: str = "v1") -> config_pb2.ConfigResponse:
    snapshot = snapshot_pb2.Snapshot(
        plugins=[
            snapshot_pb2.Plugin(
                id="p",
                name="ai-proxy",
                enabled=True,
                ai_proxy=snapshot_pb2.AiProxyConfig(
                    auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value=SECRET)
                ),
            )
        ]
    )
    return config_pb2.ConfigResponse(version_info=version, nonce="n", snapshot=snapshot)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_saved_snapshot_loads_back_and_is_owner_only(tmp_path) -> None:
    cache = ConfigCache(tmp_path / "state" / "config")
    assert cache.load() is None
    cache.save(response("v1"))
    cache.save(response("v2"))  # replaces, atomically
    assert cache.load() == response("v2")
    assert mode(cache.directory) == 0o700
    assert mode(cache.path) == 0o600
    # No temporary file is left behind.
    assert [p.name for p in cache.directory.iterdir()] == ["config.bin"]


def test_a_loose_directory_is_tightened(tmp_path) -> None:
    directory = tmp_path / "config"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    ConfigCache(directory).save(response())
    assert mode(directory) == 0o700


def test_an_encrypted_cache_hides_secrets_and_needs_its_key(tmp_path) -> None:
    key = Fernet.generate_key()
    cache = ConfigCache(tmp_path, key=key)
    cache.save(response())
    raw = cache.path.read_bytes()
    assert SECRET.encode() not in raw
    assert cache.load() == response()

    with pytest.raises(CacheError, match="no cache key"):
        ConfigCache(tmp_path).load()
    with pytest.raises(CacheError, match="does not decrypt"):
        ConfigCache(tmp_path, key=Fernet.generate_key()).load()


def test_a_plain_cache_is_refused_when_a_key_is_configured(tmp_path) -> None:
    ConfigCache(tmp_path).save(response())
    assert SECRET.encode() in (tmp_path / "config.bin").read_bytes()
    with pytest.raises(CacheError, match="not encrypted"):
        ConfigCache(tmp_path, key=Fernet.generate_key()).load()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"garbage", id="foreign-file"),
        pytest.param(b"MLC1P\xff\xff\xff", id="corrupt-protobuf"),
    ],
)
def test_a_damaged_cache_is_a_clear_error(tmp_path, data) -> None:
    (tmp_path / "config.bin").write_bytes(data)
    with pytest.raises(CacheError):
        ConfigCache(tmp_path).load()


def test_a_bad_key_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CacheError, match="Fernet key"):
        ConfigCache(tmp_path, key=b"short")


def test_the_key_comes_from_a_file_or_the_environment(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"from-file\n")
    assert load_key(key_file=key_file, env_value="from-env") == b"from-file"
    assert load_key(key_file=None, env_value="from-env ") == b"from-env"
    assert load_key(key_file=None, env_value=None) is None


def test_the_node_id_is_stable_across_restarts(tmp_path) -> None:
    first = stable_node_id(tmp_path / "state")
    assert stable_node_id(tmp_path / "state") == first
    assert stable_node_id(tmp_path / "other") != first
    assert stable_node_id(tmp_path / "state", explicit="dp-7") == "dp-7"
    assert mode(tmp_path / "state" / "node-id") == 0o600
