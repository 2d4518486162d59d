"""The fake Bedrock's fidelity: boto3's own client and botocore's event-stream parser read it.

boto3 signs every call (SigV4), parses Converse answers, decodes ConverseStream's binary frames
(checking both CRCs) and raises Bedrock's modelled errors from ``x-amzn-ErrorType``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import ClientError

from dataplane.http import eventstream
from dataplane.http.server import ServerAddress, serve_http
from dataplane.testing.fake_bedrock import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FakeBedrock,
)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "one two three"}]}]

# One session: its loader parses the service models once for every client of the module.
_SESSION = boto3.session.Session()


@pytest.fixture
async def bedrock() -> AsyncIterator[tuple[FakeBedrock, ServerAddress]]:
    fake = FakeBedrock()
    async with serve_http(fake) as address:
        yield fake, address


def client(
    url: str, *, secret: str = TEST_SECRET_ACCESS_KEY, headers: dict[str, str] | None = None
):
    runtime = _SESSION.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )

    def add_headers(request, **_: object) -> None:
        for name, value in (headers or {}).items():
            request.headers[name] = value

    runtime.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    return runtime


async def test_converse_is_parsed_by_boto3(bedrock) -> None:
    _, address = bedrock
    answer = await asyncio.to_thread(client(address.url).converse, modelId=MODEL, messages=MESSAGES)
    assert answer["output"]["message"]["content"] == [{"text": "fake reply: one two three"}]
    assert answer["stopReason"] == "end_turn"
    # 3 + 3 words of prompt, 4 words of reply.
    assert answer["usage"] == {"inputTokens": 6, "outputTokens": 4, "totalTokens": 10}


async def test_converse_cache_point_writes_then_reads(bedrock) -> None:
    _, address = bedrock
    system = [{"text": "be brief and exact"}, {"cachePoint": {"type": "default"}}]
    runtime = client(address.url)
    first, second = [
        await asyncio.to_thread(runtime.converse, modelId=MODEL, messages=MESSAGES, system=system)
        for _ in range(2)
    ]
    assert (first["usage"]["cacheWriteInputTokens"], first["usage"]["cacheReadInputTokens"]) == (
        7,
        0,
    )
    assert (second["usage"]["cacheWriteInputTokens"], second["usage"]["cacheReadInputTokens"]) == (
        0,
        7,
    )
    assert second["usage"]["inputTokens"] == 6
    assert second["usage"]["totalTokens"] == 6 + 7 + 4


async def test_converse_stream_frames_decode_with_botocore(bedrock) -> None:
    _, address = bedrock

    def run() -> list[dict]:
        answer = client(address.url).converse_stream(modelId=MODEL, messages=MESSAGES)
        return list(answer["stream"])

    events = await asyncio.to_thread(run)
    kinds = [next(iter(event)) for event in events]
    assert kinds == [
        "messageStart",
        *["contentBlockDelta"] * 4,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:5])
    assert text == "fake reply: one two three"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 6,
        "outputTokens": 4,
        "totalTokens": 10,
    }


async def test_a_corrupt_frame_is_refused_by_botocore(bedrock) -> None:
    _, address = bedrock

    def run() -> None:
        answer = client(address.url, headers={"x-fake-corrupt": "1"}).converse_stream(
            modelId=MODEL, messages=MESSAGES
        )
        list(answer["stream"])

    with pytest.raises(ChecksumMismatch):
        await asyncio.to_thread(run)


async def test_invoke_model_anthropic_whole_and_stream(bedrock) -> None:
    _, address = bedrock
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "a b"}],
        }
    )
    runtime = client(address.url)
    whole = await asyncio.to_thread(runtime.invoke_model, modelId=MODEL, body=body)
    document = json.loads(whole["body"].read())
    assert document["usage"] == {"input_tokens": 5, "output_tokens": 3}
    assert whole["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "5"

    def stream() -> list[dict]:
        answer = runtime.invoke_model_with_response_stream(modelId=MODEL, body=body)
        # botocore decodes the base64 of the wire's "bytes" into the blob it hands out.
        return [json.loads(e["chunk"]["bytes"]) for e in answer["body"]]

    events = await asyncio.to_thread(stream)
    assert events[0]["type"] == "message_start"
    assert events[-2]["usage"] == {"output_tokens": 3}
    assert events[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 5


async def test_a_wrong_secret_is_refused_in_bedrocks_shape(bedrock) -> None:
    fake, address = bedrock
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(
            client(address.url, secret="wrong").converse, modelId=MODEL, messages=MESSAGES
        )
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert fake.refused_signatures == 1


async def test_forced_errors_carry_the_error_type(bedrock) -> None:
    _, address = bedrock
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(
            client(address.url, headers={"x-fake-status": "429"}).converse,
            modelId=MODEL,
            messages=MESSAGES,
        )
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"


def test_encoded_frames_round_trip_and_split_anywhere() -> None:
    frames = [eventstream.event("contentBlockDelta", b'{"x":%d}' % i) for i in range(5)]
    data = b"".join(frames)
    for cut in range(1, len(data)):
        splitter = eventstream.EventStreamSplitter()
        assert splitter.feed(data[:cut]) + splitter.feed(data[cut:]) == frames
    decoded = eventstream.decode_frame(frames[2])
    assert (decoded.event_type, decoded.message_type, decoded.payload) == (
        "contentBlockDelta",
        "event",
        b'{"x":2}',
    )
    with pytest.raises(eventstream.EventStreamCorrupt):
        eventstream.decode_frame(frames[0][:-1] + b"\x00")
    # A bad CRC ends the stream after the good frames before it.
    splitter = eventstream.EventStreamSplitter()
    corrupt = frames[2][:-1] + bytes([frames[2][-1] ^ 1])
    assert splitter.feed(frames[0] + frames[1] + corrupt + frames[3]) == frames[:2]
    with pytest.raises(eventstream.EventStreamCorrupt, match="bad CRC"):
        splitter.flush()
    with pytest.raises(eventstream.EventStreamCorrupt, match="impossible length"):
        eventstream.EventStreamSplitter().feed(b"\x00\x00\x00\x05" + b"\x00" * 20)
