"""The fakes' errors inside a stream that began with 200, against the providers' recorded or
documented exchanges: OpenAI's ``data: {"error": ...}`` event (then ``[DONE]``), Ollama's
``{"error": "..."}`` NDJSON line. (Gemini's error frame: test_fake_gemini_fidelity.)"""

from __future__ import annotations

import httpx
import orjson

from dataplane.http.server import serve_http
from dataplane.http.sse import SseSplitter, event_data
from dataplane.testing.fake_ollama import FakeOllama
from dataplane.testing.fake_openai import FakeProvider

# Recorded from OpenAI (sashabaranov/go-openai#396): the stream's last events when it fails.
RECORDED_OPENAI_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
# Documented (ollama/ollama docs/api/errors.mdx, "Errors that occur while streaming"): an object
# with an error property, the status unchanged.
DOCUMENTED_OLLAMA_ERROR = {"error": "an error was encountered while running the model"}


async def test_openai_fake_ends_a_failing_stream_with_the_error_event_then_done() -> None:
    async with serve_http(FakeProvider()) as address, httpx.AsyncClient() as client:
        response = await client.post(
            f"{address.url}/v1/chat/completions",
            headers={"authorization": "Bearer sk-test", "x-fake-stream-error": "2:server_error"},
            json={
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "a b"}],
                "stream": True,
            },
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = SseSplitter().feed(response.content)
    datas = [event_data(event) for event in events]
    assert len(datas) == 4
    assert orjson.loads(datas[1])["object"] == "chat.completion.chunk"
    assert orjson.loads(datas[2]) == RECORDED_OPENAI_ERROR
    assert datas[3] == b"[DONE]"


async def test_ollama_fake_ends_a_failing_stream_with_the_documented_error_line() -> None:
    async with serve_http(FakeOllama()) as address, httpx.AsyncClient() as client:
        response = await client.post(
            f"{address.url}/api/chat",
            headers={"x-fake-stream-error": "3"},
            json={"model": "llama3.2", "messages": [{"role": "user", "content": "a b c d"}]},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.split(b"\n")
    assert lines[-1] == b""  # every line ends with its newline
    documents = [orjson.loads(line) for line in lines[:-1]]
    assert len(documents) == 4
    assert all(d["done"] is False for d in documents[:3])
    assert documents[-1] == DOCUMENTED_OLLAMA_ERROR
