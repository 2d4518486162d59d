"""The fake Gemini against Google's documented and recorded exchanges.

A fake is only as good as its fidelity: its answers must have the shape of the real API's
(field names and nesting of ``GenerateContentResponse``, SSE framing with one whole response
per ``data:`` frame and cumulative ``usageMetadata``, Google's error documents, key and token
auth), checked here over HTTP against recorded answers of the real API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from dataplane.http.server import serve_http
from dataplane.http.sse import SseSplitter, event_data
from dataplane.testing.fake_gemini import FakeGemini, FakeGoogleOAuth

# Recorded from the real API (gemini-2.5-flash, thinking on): the last frame of a streamed
# answer, which is a whole GenerateContentResponse, the shape generateContent answers with.
RECORDED_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {"parts": [{"text": "Hi"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 5,
        "candidatesTokenCount": 39,
        "totalTokenCount": 230,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}],
        "thoughtsTokenCount": 186,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "AdVRaMmDCYekqtsPrb_-iAw",
}
# Documented (ai.google.dev, "API errors"; Cloud API design guide, "Errors").
DOCUMENTED_ERROR_KEYS = {"code", "message", "status"}


def shape(value: Any) -> Any:
    """Field names and nesting without values (lists by their first element)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
async def fake() -> AsyncIterator[tuple[httpx.AsyncClient, FakeGemini]]:
    gemini = FakeGemini(api_key="AIza-test", oauth=FakeGoogleOAuth())
    async with serve_http(gemini) as address, httpx.AsyncClient(base_url=address.url) as client:
        yield client, gemini


BODY = {
    "contents": [{"role": "user", "parts": [{"text": "say hi"}]}],
    "generationConfig": {"thinkingConfig": {"thinkingBudget": 100}},
}
URL = "/v1beta/models/gemini-2.5-flash"


async def test_whole_response_has_the_recorded_shape(fake) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:generateContent", json=BODY, headers={"x-goog-api-key": "AIza-test"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert shape(document) == shape(RECORDED_RESPONSE)
    usage = document["usageMetadata"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )


async def test_sse_stream_frames_are_whole_responses_with_cumulative_usage(fake) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:streamGenerateContent",
        params={"alt": "sse", "key": "AIza-test"},
        json={"contents": [{"parts": [{"text": "a b c"}]}]},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    splitter = SseSplitter()
    events = splitter.feed(response.content)
    assert splitter.flush() == b""
    frames = [orjson.loads(event_data(event)) for event in events]
    assert len(frames) == 5  # "fake reply: a b c", a frame per word
    candidates = [frame["usageMetadata"]["candidatesTokenCount"] for frame in frames]
    assert candidates == [1, 2, 3, 4, 5]
    assert all("finishReason" not in frame["candidates"][0] for frame in frames[:-1])
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"
    expected = shape(RECORDED_RESPONSE)
    del expected["usageMetadata"]["thoughtsTokenCount"]  # no thinking asked
    assert shape(frames[-1]) == expected
    assert b"[DONE]" not in response.content  # Gemini's stream just ends


async def test_stream_without_alt_sse_is_one_json_array(fake) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:streamGenerateContent",
        params={"key": "AIza-test"},
        json={"contents": [{"parts": [{"text": "x"}]}]},
    )
    frames = response.json()
    assert isinstance(frames, list) and frames[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize(
    ("headers", "params", "status", "google_status"),
    [
        pytest.param({}, {}, 403, "PERMISSION_DENIED", id="no-key"),
        pytest.param({"x-goog-api-key": "AIza-wrong"}, {}, 400, "INVALID_ARGUMENT", id="bad-key"),
        pytest.param({}, {"key": "AIza-wrong"}, 400, "INVALID_ARGUMENT", id="bad-query-key"),
    ],
)
async def test_key_auth_errors_are_googles(fake, headers, params, status, google_status) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:generateContent", json=BODY, headers=headers, params=params
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) >= DOCUMENTED_ERROR_KEYS
    assert (error["code"], error["status"]) == (status, google_status)


async def test_bad_body_is_invalid_argument(fake) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:generateContent", json={"contents": []}, headers={"x-goog-api-key": "AIza-test"}
    )
    assert response.status_code == 400
    assert "contents is not specified" in response.json()["error"]["message"]


async def test_vertex_needs_a_token_the_endpoint_issued(fake) -> None:
    client, gemini = fake
    path = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash"
    refused = await client.post(
        f"{path}:generateContent", json=BODY, headers={"authorization": "Bearer ya29.forged"}
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    gemini.oauth.issued["ya29.ok"] = gemini.oauth.clock() + 60
    accepted = await client.post(
        f"{path}:generateContent", json=BODY, headers={"authorization": "Bearer ya29.ok"}
    )
    assert accepted.status_code == 200
    assert accepted.json()["modelVersion"] == "gemini-2.5-flash"


async def test_token_endpoint_checks_the_signed_grant(fake) -> None:
    client, _ = fake
    response = await client.post(
        "/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": "a.b.c",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# Reported from the real API (googleapis/js-genai#650): a stream that fails after its 200 ends
# with this frame, a whole Google error document.
RECORDED_STREAM_ERROR = {
    "error": {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
}


async def test_a_stream_that_fails_ends_with_the_recorded_error_frame(fake) -> None:
    client, _ = fake
    response = await client.post(
        f"{URL}:streamGenerateContent",
        params={"alt": "sse", "key": "AIza-test"},
        json={"contents": [{"parts": [{"text": "a b c"}]}]},
        headers={"x-fake-stream-error": "2:500"},
    )
    assert response.status_code == 200  # the status line went before the failure
    events = SseSplitter().feed(response.content)
    frames = [orjson.loads(event_data(event)) for event in events]
    assert len(frames) == 3 and "candidates" in frames[1]
    assert frames[-1] == RECORDED_STREAM_ERROR
    # google-genai recognises an error frame by its JSON beginning with the "error" key.
    assert event_data(events[-1]).startswith(b'{"error":')
