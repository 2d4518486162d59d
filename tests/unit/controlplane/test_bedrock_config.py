"""Kong's decK ai-proxy config for Bedrock: accepted by apply, shipped in the snapshot, served.

The document is Kong's own example shape (auth.aws_*, model.options.bedrock.*); what apply
accepts, the data plane of the same version compiles (never a NACK).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.configsync.snapshot import ai_proxy_config
from controlplane.declarative import DeclarativeError, parse_document
from dataplane.errors import CompileError
from dataplane.proxy.compiler import compile_snapshot
from meterline.dataplane.v1 import snapshot_pb2

DOCUMENT: dict[str, Any] = {
    "_format_version": "3.0",
    "services": [{"name": "ai", "url": "http://127.0.0.1:9/"}],
    "routes": [{"name": "claude", "service": "ai", "paths": ["/bedrock"]}],
    "plugins": [
        {
            "name": "ai-proxy",
            "service": "ai",
            "config": {
                "route_type": "llm/v1/chat",
                "llm_format": "bedrock",
                "auth": {
                    "aws_access_key_id": "AKIAEXAMPLE000000000",
                    "aws_secret_access_key": "example/secret",
                },
                "model": {
                    "provider": "bedrock",
                    "name": "anthropic.claude-3-haiku-20240307-v1:0",
                    "options": {
                        "bedrock": {
                            "aws_region": "eu-west-1",
                            "aws_assume_role_arn": "arn:aws:iam::123456789012:role/ai",
                            "aws_role_session_name": "meterline",
                        }
                    },
                },
            },
        }
    ],
}


def _config(document: dict[str, Any]) -> snapshot_pb2.AiProxyConfig:
    parsed = parse_document(yaml.safe_dump(document))
    (plugin,) = parsed.gateway.plugins
    return ai_proxy_config(plugin.config)


def test_kong_bedrock_config_reaches_the_snapshot_and_compiles() -> None:
    config = _config(DOCUMENT)

    assert config.llm_format == "bedrock"
    assert (config.auth.aws_access_key_id, config.auth.aws_secret_access_key) == (
        "AKIAEXAMPLE000000000",
        "example/secret",
    )
    bedrock = config.model.options.bedrock
    assert (bedrock.aws_region, bedrock.aws_assume_role_arn, bedrock.aws_role_session_name) == (
        "eu-west-1",
        "arn:aws:iam::123456789012:role/ai",
        "meterline",
    )
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="ai", url="http://127.0.0.1:9/")],
        routes=[snapshot_pb2.Route(id="r", name="claude", service_id="s", paths=["/bedrock"])],
        plugins=[snapshot_pb2.Plugin(id="p", name="ai-proxy", enabled=True, ai_proxy=config)],
    )
    route = next(iter(compile_snapshot(snapshot, version="v1").routes))
    assert route.ai_proxy is not None
    target = route.ai_proxy.target
    assert target.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert target.signer is not None and target.signer.region == "eu-west-1"
    # The client's own SigV4 headers never go upstream: the gateway signs again.
    assert {b"authorization", b"x-amz-date", b"x-amz-security-token"} <= route.dropped_headers
    assert "example/secret" not in repr(target) + repr(target.signer)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda c: c["model"]["options"]["bedrock"].pop("aws_region"),
            "options.bedrock.aws_region",
            id="no-region",
        ),
        pytest.param(
            lambda c: c["auth"].pop("aws_secret_access_key"),
            "aws_secret_access_key",
            id="half-a-key-pair",
        ),
        pytest.param(
            lambda c: c["model"].update(provider="openai"),
            '"bedrock" needs model.provider "bedrock"',
            id="format-without-provider",
        ),
        pytest.param(
            lambda c: c["model"]["options"]["bedrock"].update(aws_sts_endpoint_url="ftp://x"),
            "must be an http(s) URL",
            id="bad-sts-url",
        ),
        pytest.param(
            lambda c: c["model"]["options"]["bedrock"].update(region="x"),
            'unknown field "config.model.options.bedrock.region"',
            id="unknown-field",
        ),
    ],
)
def test_bad_bedrock_config_is_refused_by_apply(change, message) -> None:
    document = yaml.safe_load(yaml.safe_dump(DOCUMENT))
    change(document["plugins"][0]["config"])
    with pytest.raises(DeclarativeError) as raised:
        parse_document(yaml.safe_dump(document))
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_data_plane_refuses_what_apply_would_have_refused() -> None:
    config = _config(DOCUMENT)
    config.model.options.bedrock.aws_region = ""
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="ai", url="http://127.0.0.1:9/")],
        routes=[snapshot_pb2.Route(id="r", name="claude", service_id="s", paths=["/bedrock"])],
        plugins=[snapshot_pb2.Plugin(id="p", name="ai-proxy", enabled=True, ai_proxy=config)],
    )
    with pytest.raises(CompileError, match=r"needs model\.options\.bedrock\.aws_region"):
        compile_snapshot(snapshot, version="v1")


KONG_CLAUDE_CODE_BEDROCK = """
_format_version: "3.0"
services: [{name: ai, url: "http://127.0.0.1:9/"}]
routes: [{name: claude, service: ai, paths: [/claude]}]
plugins:
- name: ai-proxy-advanced
  config:
    llm_format: anthropic
    targets:
    - route_type: llm/v1/chat
      auth:
        allow_override: false
        aws_access_key_id: AKIAEXAMPLE000000000
        aws_secret_access_key: example/secret
      model:
        provider: bedrock
        name: us.anthropic.claude-haiku-4-5-20251001-v1:0
        options:
          anthropic_version: bedrock-2023-05-31
          bedrock:
            aws_region: us-west-2
          max_tokens: 8192
"""


def test_kongs_claude_code_bedrock_example_applies_and_compiles() -> None:
    from controlplane.configsync.snapshot import ai_proxy_advanced_config

    (plugin,) = parse_document(KONG_CLAUDE_CODE_BEDROCK).gateway.plugins
    config = ai_proxy_advanced_config(plugin.config)
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="ai", url="http://127.0.0.1:9/")],
        routes=[snapshot_pb2.Route(id="r", name="claude", service_id="s", paths=["/claude"])],
        plugins=[
            snapshot_pb2.Plugin(id="p", name="ai-proxy-advanced", enabled=True, ai_proxy=config)
        ],
    )
    route = next(iter(compile_snapshot(snapshot, version="v1").routes))
    assert route.ai_proxy is not None
    assert route.ai_proxy.anthropic_version == "bedrock-2023-05-31"
    assert route.ai_proxy.max_tokens == 8192
    assert route.ai_proxy.target.base_url == "https://bedrock-runtime.us-west-2.amazonaws.com"
    assert type(route.translator).__name__ == "AnthropicToBedrockTranslator"
