"""A data plane refuses what it cannot compile one route at a time (compile_isolating), and
compiles Kong's route settings (strip_path, preserve_host, protocols)."""

from __future__ import annotations

import pytest

from dataplane.config.sync import MAX_ERROR_CHARS, partial_message
from dataplane.proxy.compiler import CompileError, compile_isolating, compile_snapshot
from meterline.dataplane.v1 import snapshot_pb2


def _route_ai_proxy(snapshot: snapshot_pb2.Snapshot, route_id: str, provider: str) -> None:
    """Give route ``route_id`` its own ai-proxy (over the service one) with ``provider``."""
    snapshot.plugins.add(
        id=f"ai-{route_id}",
        name="ai-proxy",
        route_id=route_id,
        enabled=True,
        ai_proxy=snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat",
            auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer k"),
            model=snapshot_pb2.AiProxyModel(provider=provider, name="m"),
        ),
    )


def test_a_route_whose_plugin_does_not_compile_is_refused_alone(valid_snapshot) -> None:
    _route_ai_proxy(valid_snapshot, "r2", "provider-of-the-future")

    config = compile_isolating(valid_snapshot, version="v2")

    chat = config.routes.match("/chat/completions", "POST")
    assert chat is not None and chat.name == "chat" and not chat.refused
    admin = config.routes.match("/chat/admin", "GET")
    assert admin is not None and admin.name == "admin"
    assert admin.refused.startswith('route "admin" is not served by this data plane: ')
    assert 'plugin "ai-r2": unknown provider "provider-of-the-future"' in admin.refused
    assert admin.ai_proxy is None and admin.key_auth is None
    assert config.refused == (admin.refused,)
    # Compiled strictly (what apply and the tests check), the same snapshot is refused whole.
    with pytest.raises(CompileError, match='plugin "ai-r2": unknown provider'):
        compile_snapshot(valid_snapshot, version="v2")


def test_a_global_plugin_of_a_newer_control_plane_refuses_every_route(valid_snapshot) -> None:
    valid_snapshot.plugins.add(id="next", name="plugin-of-the-future", enabled=True)

    config = compile_isolating(valid_snapshot, version="v2")

    assert [route.refused != "" for route in config.routes] == [True, True]
    assert all('unknown plugin name "plugin-of-the-future"' in r for r in config.refused)
    assert len(config.refused) == 2


def test_a_plugin_of_no_route_is_reported_as_not_applied(valid_snapshot) -> None:
    valid_snapshot.services.add(id="s2", name="empty-service", url="http://x.invalid")
    valid_snapshot.plugins.add(id="lonely", name="plugin-of-the-future", service_id="s2")

    config = compile_isolating(valid_snapshot, version="v2")

    assert not any(route.refused for route in config.routes)
    assert config.refused == (
        'plugin "lonely" is not applied by this data plane: unknown plugin name '
        '"plugin-of-the-future" (expected "key-auth", "ai-proxy" or "ai-proxy-advanced")',
    )


def test_a_route_that_cannot_be_matched_is_left_out(valid_snapshot) -> None:
    valid_snapshot.routes[1].paths[:] = ["~/chat/(admin"]

    config = compile_isolating(valid_snapshot, version="v2")

    assert [route.name for route in config.routes] == ["chat"]
    (refusal,) = config.refused
    assert refusal.startswith(
        'route "admin" is not served by this data plane: regex "/chat/(admin"'
    )
    with pytest.raises(CompileError, match='route "admin": regex "/chat/\\(admin" does not'):
        compile_snapshot(valid_snapshot, version="v2")


def test_a_grpc_only_route_is_refused(valid_snapshot) -> None:
    valid_snapshot.routes[1].protocols[:] = ["grpc", "grpcs"]
    config = compile_isolating(valid_snapshot, version="v2")
    assert config.refused == (
        'route "admin" is not served by this data plane: protocols grpc, grpcs: data planes '
        "serve only http and https",
    )


def test_snapshot_wide_faults_still_refuse_the_snapshot(valid_snapshot) -> None:
    valid_snapshot.routes.add(id="r1", name="again", service_id="s1", paths=["/x"])
    with pytest.raises(CompileError, match='duplicate route id "r1"'):
        compile_isolating(valid_snapshot, version="v2")


@pytest.mark.parametrize(
    ("protocols", "code", "expected"),
    [
        pytest.param([], 0, 0, id="default-both"),
        pytest.param(["http", "https"], 0, 0, id="both"),
        pytest.param(["http"], 0, 0, id="http-only"),
        pytest.param(["https"], 0, 426, id="https-only-426"),
        pytest.param(["https"], 308, 308, id="https-only-redirect"),
    ],
)
def test_protocols_compile_to_the_answer_for_plain_http(
    valid_snapshot, protocols: list[str], code: int, expected: int
) -> None:
    route = valid_snapshot.routes[0]
    route.protocols[:] = protocols
    route.https_redirect_status_code = code
    route.strip_path = True
    route.preserve_host = True
    chat = compile_snapshot(valid_snapshot, version="v1").routes.match("/chat", "POST")
    assert chat is not None
    assert (chat.https_redirect, chat.strip_path, chat.preserve_host) == (expected, True, True)


def test_an_unknown_redirect_code_refuses_the_route(valid_snapshot) -> None:
    valid_snapshot.routes[0].https_redirect_status_code = 418
    with pytest.raises(CompileError, match="https_redirect_status_code 418 is not one of"):
        compile_snapshot(valid_snapshot, version="v1")


def test_the_nack_text_of_many_refusals_is_capped() -> None:
    refused = [f'route "r{i}" is not served by this data plane: {"x" * 90}' for i in range(100)]
    text = partial_message("v7", refused)
    assert len(text) <= MAX_ERROR_CHARS
    assert text.startswith('serving config version v7 except 100 refused: route "r0" is not')
    shown = text.count("is not served")
    assert text.endswith(f"; and {100 - shown} more (see its log)") and 20 < shown < 100
    assert partial_message("v7", refused[:2]) == (
        "serving config version v7 except 2 refused: " + "; ".join(refused[:2])
    )
