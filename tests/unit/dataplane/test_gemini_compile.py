"""Compiling provider "gemini": Gemini API and Vertex AI URLs, key placement, GCP auth, refusals."""

from __future__ import annotations

import orjson
import pytest

from dataplane.config.gcp_tokens import ServiceAccountTokens
from dataplane.proxy.compiler import CompileError, compile_snapshot
from dataplane.testing.fake_gemini import FakeGoogleOAuth
from dataplane.translate.gemini_format import operation_url
from dataplane.translate.gemini_gemini import GeminiNativeTranslator
from dataplane.translate.openai_gemini import OpenAIToGeminiTranslator
from meterline.dataplane.v1 import snapshot_pb2


def _ai(snapshot: snapshot_pb2.Snapshot) -> snapshot_pb2.AiProxyConfig:
    return next(p for p in snapshot.plugins if p.id == "ai").ai_proxy


@pytest.fixture
def gemini_snapshot(valid_snapshot) -> snapshot_pb2.Snapshot:
    ai = _ai(valid_snapshot)
    ai.model.provider = "gemini"
    ai.model.name = "gemini-2.5-flash"
    ai.auth.CopyFrom(
        snapshot_pb2.AiProxyAuth(param_name="key", param_value="AIza-k", param_location="query")
    )
    return valid_snapshot


def _url(snapshot: snapshot_pb2.Snapshot, *, stream: bool = False) -> str:
    route = compile_snapshot(snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    operation = "streamGenerateContent" if stream else "generateContent"
    return operation_url(
        route.ai_proxy.target, model="gemini-2.5-flash", operation=operation, stream=stream
    )


def test_kong_default_gemini_config_calls_the_gemini_api(gemini_snapshot) -> None:
    config = compile_snapshot(gemini_snapshot, version="v1")
    route = config.routes.match("/chat", "POST")
    assert route is not None and isinstance(route.translator, OpenAIToGeminiTranslator)
    assert route.ai_proxy is not None
    assert route.ai_proxy.target.origin == "https://generativelanguage.googleapis.com:443"
    assert "AIza-k" not in repr(route)
    assert _url(gemini_snapshot, stream=True) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:"
        "streamGenerateContent?key=AIza-k&alt=sse"
    )
    assert b"x-goog-api-key" in route.dropped_headers


def test_native_format_picks_the_native_translator(gemini_snapshot) -> None:
    _ai(gemini_snapshot).llm_format = "gemini"
    route = compile_snapshot(gemini_snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and isinstance(route.translator, GeminiNativeTranslator)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            {"upstream_url": "http://127.0.0.1:9"},
            "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent?key=AIza-k",
            id="base-url-gets-the-gemini-path",
        ),
        pytest.param(
            {"upstream_url": "http://proxy.test/gemini/fixed:generateContent"},
            "http://proxy.test/gemini/fixed:generateContent?key=AIza-k",
            id="full-url-as-kong",
        ),
        pytest.param(
            {"gemini": {"project_id": "p1", "location_id": "us-central1"}},
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p1/locations/us-central1/"
            "publishers/google/models/gemini-2.5-flash:generateContent?key=AIza-k",
            id="vertex-default-endpoint",
        ),
        pytest.param(
            {"gemini": {"project_id": "p1", "location_id": "global"}},
            "https://aiplatform.googleapis.com/v1/projects/p1/locations/global/"
            "publishers/google/models/gemini-2.5-flash:generateContent?key=AIza-k",
            id="vertex-global",
        ),
        pytest.param(
            {
                "gemini": {
                    "api_endpoint": "europe-west4-aiplatform.googleapis.com",
                    "project_id": "p1",
                    "location_id": "europe-west4",
                }
            },
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p1/locations/"
            "europe-west4/publishers/google/models/gemini-2.5-flash:generateContent?key=AIza-k",
            id="vertex-kong-api-endpoint",
        ),
        pytest.param(
            {
                "upstream_url": "http://127.0.0.1:9",
                "gemini": {"project_id": "p1", "location_id": "l1", "endpoint_id": "42"},
            },
            "http://127.0.0.1:9/v1/projects/p1/locations/l1/endpoints/42:generateContent"
            "?key=AIza-k",
            id="vertex-endpoint-behind-a-base-url",
        ),
    ],
)
def test_upstream_urls(gemini_snapshot, options, expected) -> None:
    target_options = _ai(gemini_snapshot).model.options
    if "upstream_url" in options:
        target_options.upstream_url = options["upstream_url"]
    if "gemini" in options:
        target_options.gemini.CopyFrom(snapshot_pb2.GeminiOptions(**options["gemini"]))
    assert _url(gemini_snapshot) == expected


def test_service_account_auth_builds_a_token_source(gemini_snapshot) -> None:
    oauth = FakeGoogleOAuth()
    account = oauth.service_account("http://127.0.0.1:9/token")
    ai = _ai(gemini_snapshot)
    ai.model.options.gemini.CopyFrom(snapshot_pb2.GeminiOptions(project_id="p", location_id="l"))
    ai.auth.CopyFrom(
        snapshot_pb2.AiProxyAuth(
            gcp_use_service_account=True, gcp_service_account_json=orjson.dumps(account).decode()
        )
    )
    route = compile_snapshot(gemini_snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    credentials = route.ai_proxy.target.credentials
    assert isinstance(credentials, ServiceAccountTokens)
    assert route.ai_proxy.target.auth_query == () and route.ai_proxy.target.auth_headers == ()
    assert "PRIVATE KEY" not in repr(route) and "PRIVATE KEY" not in repr(credentials)


def _with_auth(**fields) -> object:
    def mutate(snapshot: snapshot_pb2.Snapshot) -> None:
        _ai(snapshot).auth.CopyFrom(snapshot_pb2.AiProxyAuth(**fields))

    return mutate


def _with_gemini(**fields) -> object:
    def mutate(snapshot: snapshot_pb2.Snapshot) -> None:
        _ai(snapshot).model.options.gemini.CopyFrom(snapshot_pb2.GeminiOptions(**fields))

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            _with_gemini(project_id="p"), "needs both project_id and location_id", id="no-location"
        ),
        pytest.param(
            _with_gemini(api_endpoint="h.test"),
            "need project_id and location_id",
            id="endpoint-only",
        ),
        pytest.param(
            _with_gemini(project_id="p/../x", location_id="l"), "is not a name", id="bad-project"
        ),
        pytest.param(
            _with_gemini(api_endpoint="h.test/path", project_id="p", location_id="l"),
            "is not a host name",
            id="endpoint-with-path",
        ),
        pytest.param(
            _with_auth(param_name="key", param_value="k", param_location="body"),
            "not the body",
            id="key-in-body",
        ),
        pytest.param(
            _with_auth(gcp_service_account_json="{}"),
            "needs auth.gcp_use_service_account: true",
            id="json-without-flag",
        ),
        pytest.param(
            _with_auth(gcp_use_service_account=True, gcp_service_account_json="not json"),
            "is not JSON",
            id="json-not-json",
        ),
        pytest.param(
            _with_auth(gcp_use_service_account=True, gcp_service_account_json='{"type": "x"}'),
            'expected "service_account"',
            id="json-wrong-type",
        ),
        pytest.param(
            _with_auth(
                gcp_use_service_account=True,
                gcp_service_account_json='{"client_email": "a@b", "private_key": "nope"}',
            ),
            "cannot be loaded",
            id="json-bad-key",
        ),
        pytest.param(
            _with_auth(gcp_use_service_account=True, header_name="x", header_value="y"),
            "replaces header_name/param_name",
            id="two-auths",
        ),
    ],
)
def test_bad_gemini_configs_are_refused(gemini_snapshot, mutate, message) -> None:
    mutate(gemini_snapshot)
    with pytest.raises(CompileError) as caught:
        compile_snapshot(gemini_snapshot, version="v1")
    assert message in str(caught.value)
    assert "nope" not in str(caught.value)  # never a key's text in a message


def test_gemini_options_on_another_provider_are_refused(valid_snapshot) -> None:
    _ai(valid_snapshot).model.options.gemini.project_id = "p"
    with pytest.raises(CompileError, match='only for provider "gemini"'):
        compile_snapshot(valid_snapshot, version="v1")


def test_native_gemini_format_needs_provider_gemini(valid_snapshot) -> None:
    _ai(valid_snapshot).llm_format = "gemini"
    with pytest.raises(CompileError, match='llm_format "gemini" needs provider "gemini"'):
        compile_snapshot(valid_snapshot, version="v1")
