"""A fake Amazon Bedrock Runtime (and STS) for tests and the local demo.

It speaks Bedrock's wire format, framing included:

- ``POST /model/{modelId}/converse``: Converse. The answer has ``output.message``,
  ``stopReason``, ``usage`` (``inputTokens``, ``outputTokens``, ``totalTokens``, and
  ``cacheReadInputTokens``/``cacheWriteInputTokens`` when the system prompt has a
  ``cachePoint``) and ``metrics.latencyMs``.
- ``POST /model/{modelId}/converse-stream``: ConverseStream, as AWS's binary event stream
  (``application/vnd.amazon.eventstream``: prelude + CRC, headers ``:event-type``,
  ``:content-type``, ``:message-type``, payload, message CRC): ``messageStart``, one
  ``contentBlockDelta`` per word, ``contentBlockStop``, ``messageStop``, ``metadata`` (usage,
  metrics). Every payload has AWS's ``p`` padding field.
- ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream``: Anthropic Messages on
  Bedrock (``anthropic_version: bedrock-2023-05-31`` in the body, no ``model``). The stream's
  ``chunk`` events carry ``{"bytes": base64(<Anthropic SSE event JSON>)}``; ``message_stop``
  carries ``amazon-bedrock-invocationMetrics``. Whole answers have the
  ``x-amzn-bedrock-input-token-count``/``-output-token-count`` headers.
- ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream`` of a Mistral model (an
  id starting ``mistral.``, after any cross-region prefix): ``{"prompt", "max_tokens"}`` ->
  ``{"outputs": [{"text", "stop_reason"}]}``, no usage in the body: the counts are only in the
  ``x-amzn-bedrock-*-token-count`` headers (whole) or the last chunk's
  ``amazon-bedrock-invocationMetrics`` (stream, chunks ``{"outputs": [{"text",
  "stop_reason"}]}``), as Bedrock answers. Prompt tokens = 3 + the words of the prompt without
  its ``<s>``/``[INST]``/``[/INST]`` tags.
- ``POST /model/{modelId}/invoke`` of an embedding model (an id containing ``embed``): Titan
  Text Embeddings (``{"inputText", "dimensions"}`` -> ``{"embedding", "inputTextTokenCount"}``)
  or Cohere Embed (``{"texts", "input_type"}`` -> ``{"embeddings", "id", "response_type",
  "texts"}``, no count in the body); both with ``x-amzn-bedrock-input-token-count``.
- ``POST /model/{modelId}/count-tokens``: CountTokens of an ``invokeModel`` body (base64) or a
  ``converse`` input, answering ``{"inputTokens": N}``.
- ``POST /`` with ``Action=AssumeRole``: STS, answering fresh temporary credentials (which the
  fake then accepts) valid ``sts_duration_s``.

Token counts are deterministic, as in the OpenAI and Anthropic fakes: prompt tokens = for the
system prompt (if any) and each message, 3 + its whitespace-separated words; the reply is
``"fake reply:"`` + the words of the last message, cut to ``maxTokens``; output tokens = words.

Every request must carry a valid SigV4 signature (recomputed with botocore from the known key
pairs; ``x-amz-date`` within 15 minutes). A bad one is refused as Bedrock does: 403,
``x-amzn-ErrorType`` and ``{"message": ...}``. Test knobs, as request headers:
``x-fake-status: N`` (an error of status N), ``x-fake-cut: N`` (a stream's connection dies
after N deltas), ``x-fake-corrupt: N`` (the frame after N deltas has a bad CRC),
``x-fake-stream-error: N:throttlingException`` (after N deltas an exception frame of that
type, e.g. ``modelStreamErrorException``, ends the stream, as AWS ends it).

Run it with ``python -m dataplane.testing.fake_bedrock --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from dataplane.http import eventstream
from dataplane.http.asgi import Headers, Receive, Scope, Send, read_body, send_response
from dataplane.http.server import serve_http, split_host_port
from dataplane.testing.fake_openai import MESSAGE_OVERHEAD_TOKENS, REPLY_PREFIX, RecordedRequest

TEST_ACCESS_KEY_ID = "AKIAFAKEBEDROCK00001"
TEST_SECRET_ACCESS_KEY = "fake/bedrock/secret/key/0123456789abcdefghij"
ANTHROPIC_BEDROCK_VERSION = "bedrock-2023-05-31"
_JSON = (b"content-type", b"application/json")
_EVENT_STREAM = (b"content-type", eventstream.CONTENT_TYPE.encode())
_MAX_SKEW_S = 15 * 60
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_OPERATIONS = (
    "converse",
    "converse-stream",
    "invoke",
    "invoke-with-response-stream",
    "count-tokens",
)


@dataclass
class _Refused(Exception):
    status: int
    error_type: str
    message: str


@dataclass
class FakeBedrock:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    # Access key id -> (secret, session token or None) accepted in signatures.
    credentials: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {TEST_ACCESS_KEY_ID: (TEST_SECRET_ACCESS_KEY, None)}
    )
    sts_duration_s: int = 3600
    requests: list[RecordedRequest] = field(default_factory=list)
    # Signatures refused, and roles assumed (with their session names), for tests.
    refused_signatures: int = 0
    assumed_roles: list[tuple[str, str]] = field(default_factory=list)
    # Access keys of assumed-role sessions expired early (expire_sessions).
    expired: set[str] = field(default_factory=set)
    _cached_systems: set[str] = field(default_factory=set)

    def expire_sessions(self) -> None:
        """Expire every temporary credential issued so far (STS sessions), as AWS would."""
        self.expired |= {key for key, (_, token) in self.credentials.items() if token}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/_fake/requests":
            payload = orjson.dumps([asdict(request) for request in self.requests])
            await send_response(send, 200, payload, [_JSON])
            return
        raw = await read_body(receive, limit=64 * 1024 * 1024)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            body: Any = orjson.loads(raw) if raw and path != "/" else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(RecordedRequest(method=method, path=path, headers=headers, body=body))
        try:
            if method == "POST" and path == "/":
                try:
                    await self._sts(scope, headers, raw, send)
                except _Refused as refused:
                    await _sts_error(send, refused)
                return
            model, operation = _route(method, path)
            self._verify(scope, headers, raw, service="bedrock")
            forced = headers.get("x-fake-status", "")
            if forced.isdigit():
                status = int(forced)
                raise _Refused(
                    status, _ERROR_TYPES.get(status, "InternalServerException"), "Forced"
                )
            if not isinstance(body, dict):
                raise _Refused(400, "ValidationException", "Malformed input request")
            if operation == "count-tokens":
                await self._count_tokens(send, body)
            elif operation.startswith("converse"):
                await self._converse(send, model, body, headers, stream=operation.endswith("m"))
            elif "embed" in model and operation == "invoke":
                await _embed(send, model, body)
            else:
                await self._invoke(send, model, body, headers, stream=operation.endswith("m"))
        except _Refused as refused:
            await _error(send, refused)

    def _verify(self, scope: Scope, headers: dict[str, str], raw: bytes, *, service: str) -> None:
        """Recompute the request's SigV4 signature with botocore; _Refused if it differs."""
        authorization = headers.get("authorization", "")
        fields = dict(
            part.strip().split("=", 1)
            for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
            if "=" in part
        )
        scope_parts = fields.get("Credential", "").split("/")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or len(scope_parts) != 5:
            self.refused_signatures += 1
            raise _Refused(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        access_key, _day, region, signed_service, _ = scope_parts
        if access_key in self.expired:
            self.refused_signatures += 1
            raise _Refused(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            )
        known = self.credentials.get(access_key)
        if known is None or known[1] != headers.get("x-amz-security-token"):
            self.refused_signatures += 1
            raise _Refused(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        timestamp = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.UTC
            )
        except ValueError:
            signed_at = datetime.datetime.fromtimestamp(0, datetime.UTC)
        if abs(time.time() - signed_at.timestamp()) > _MAX_SKEW_S:
            self.refused_signatures += 1
            raise _Refused(403, "InvalidSignatureException", "Signature expired")
        names = fields.get("SignedHeaders", "").split(";")
        query = scope["query_string"].decode("latin-1")
        url = f"http://{headers.get('host', '')}{scope['raw_path'].decode('latin-1')}"
        request = AWSRequest(
            method=scope["method"],
            url=f"{url}?{query}" if query else url,
            data=raw,
            headers={name: headers.get(name, "") for name in names},
        )
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(ReadOnlyCredentials(access_key, known[0], known[1]), service, region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if signed_service != service or "host" not in names or expected != fields.get("Signature"):
            self.refused_signatures += 1
            raise _Refused(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )

    async def _sts(self, scope: Scope, headers: dict[str, str], raw: bytes, send: Send) -> None:
        self._verify(scope, headers, raw, service="sts")
        form = dict(parse_qsl(raw.decode()))
        if form.get("Action") != "AssumeRole" or not form.get("RoleArn"):
            raise _Refused(400, "InvalidAction", "Could not find operation")
        self.assumed_roles.append((form["RoleArn"], form.get("RoleSessionName", "")))
        key = "ASIA" + uuid.uuid4().hex[:16].upper()
        secret, token = uuid.uuid4().hex + uuid.uuid4().hex, "FwoG" + uuid.uuid4().hex
        self.credentials[key] = (secret, token)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=self.sts_duration_s
        )
        xml = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><Credentials>"
            f"<AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken>"
            f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
            "</Credentials><AssumedRoleUser>"
            f"<AssumedRoleId>AROAFAKE:{form.get('RoleSessionName', '')}</AssumedRoleId>"
            f"<Arn>{form['RoleArn']}</Arn></AssumedRoleUser></AssumeRoleResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>"
        )
        await send_response(send, 200, xml.encode(), [(b"content-type", b"text/xml")])

    def _converse_usage(self, body: dict[str, Any], output: int) -> dict[str, int]:
        system_blocks = body.get("system") or []
        system = " ".join(b["text"] for b in system_blocks if isinstance(b.get("text"), str))
        cached = any("cachePoint" in block for block in system_blocks)
        prompt = sum(
            MESSAGE_OVERHEAD_TOKENS + len(_text(message.get("content")).split())
            for message in body.get("messages") or []
        )
        system_tokens = MESSAGE_OVERHEAD_TOKENS + len(system.split()) if system_blocks else 0
        read = write = 0
        if cached and system in self._cached_systems:
            read = system_tokens
        elif cached:
            write = system_tokens
            self._cached_systems.add(system)
        usage = {
            "inputTokens": prompt + system_tokens - read - write,
            "outputTokens": output,
            "totalTokens": prompt + system_tokens + output,
        }
        if cached:
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = write
        return usage

    async def _converse(
        self, send: Send, model: str, body: dict[str, Any], headers: dict[str, str], *, stream: bool
    ) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Refused(400, "ValidationException", "The messages field is required")
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        words, stop = _reply(_text(messages[-1].get("content")), limit)
        usage = self._converse_usage(body, len(words))
        if not stream:
            document = {
                "output": {
                    "message": {"role": "assistant", "content": [{"text": " ".join(words)}]}
                },
                "stopReason": stop,
                "usage": usage,
                "metrics": {"latencyMs": 42},
            }
            await send_response(send, 200, orjson.dumps(document), [_JSON, *_request_id()])
            return
        frames = [eventstream.event("messageStart", _padded({"role": "assistant"}))]
        for index, word in enumerate(words):
            text = word if index == 0 else f" {word}"
            delta = {"contentBlockIndex": 0, "delta": {"text": text}}
            frames.append(eventstream.event("contentBlockDelta", _padded(delta)))
        frames.append(eventstream.event("contentBlockStop", _padded({"contentBlockIndex": 0})))
        frames.append(eventstream.event("messageStop", _padded({"stopReason": stop})))
        metadata = {"usage": usage, "metrics": {"latencyMs": 42}}
        frames.append(eventstream.event("metadata", _padded(metadata)))
        await _stream(send, frames, headers)

    async def _count_tokens(self, send: Send, body: dict[str, Any]) -> None:
        request = body.get("input")
        invoke = request.get("invokeModel") if isinstance(request, dict) else None
        converse = request.get("converse") if isinstance(request, dict) else None
        if isinstance(invoke, dict) and isinstance(invoke.get("body"), str):
            try:
                inner = orjson.loads(base64.b64decode(invoke["body"]))
            except (ValueError, orjson.JSONDecodeError):
                raise _Refused(400, "ValidationException", "invokeModel.body is not JSON") from None
            tokens = _anthropic_prompt_tokens(inner)
        elif isinstance(converse, dict):
            tokens = self._converse_usage(converse, 0)["totalTokens"]
        else:
            raise _Refused(400, "ValidationException", "input needs invokeModel or converse")
        await send_response(send, 200, orjson.dumps({"inputTokens": tokens}), [_JSON])

    async def _invoke(
        self, send: Send, model: str, body: dict[str, Any], headers: dict[str, str], *, stream: bool
    ) -> None:
        if model.startswith("mistral.") or ".mistral." in model:
            await _invoke_mistral(send, body, headers, stream=stream)
            return
        if body.get("anthropic_version") != ANTHROPIC_BEDROCK_VERSION:
            raise _Refused(
                400, "ValidationException", "invalid anthropic_version: bedrock-2023-05-31 expected"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or "model" in body:
            raise _Refused(400, "ValidationException", "Malformed input request")
        if not isinstance(body.get("max_tokens"), int):
            raise _Refused(400, "ValidationException", "max_tokens: field required")
        prompt = _anthropic_prompt_tokens(body)
        words, stop = _reply(_text(messages[-1].get("content")), body["max_tokens"])
        stop = {"end_turn": "end_turn", "max_tokens": "max_tokens"}[stop]
        message_id = f"msg_bdrk_{uuid.uuid4().hex[:24]}"
        if not stream:
            document = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": " ".join(words)}],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": len(words)},
            }
            counts = [
                (b"x-amzn-bedrock-input-token-count", str(prompt).encode()),
                (b"x-amzn-bedrock-output-token-count", str(len(words)).encode()),
            ]
            await send_response(send, 200, orjson.dumps(document), [_JSON, *counts])
            return
        events: list[dict[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ]
        for index, word in enumerate(words):
            text = word if index == 0 else f" {word}"
            events.append(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                }
            )
        events.append({"type": "content_block_stop", "index": 0})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            }
        )
        events.append(
            {
                "type": "message_stop",
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": prompt,
                    "outputTokenCount": len(words),
                    "invocationLatency": 42,
                    "firstByteLatency": 7,
                },
            }
        )
        frames = [
            eventstream.event(
                "chunk", _padded({"bytes": base64.b64encode(orjson.dumps(e)).decode()})
            )
            for e in events
        ]
        await _stream(send, frames, headers, deltas_from=2)


_MISTRAL_TAGS = ("<s>", "</s>", "[INST]", "[/INST]")


async def _invoke_mistral(
    send: Send, body: dict[str, Any], headers: dict[str, str], *, stream: bool
) -> None:
    """InvokeModel of a Mistral model: text completion of ``prompt``, usage only in the
    headers (whole) or the last chunk's invocationMetrics (stream)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _Refused(400, "ValidationException", "Malformed input request: prompt")
    text = prompt
    for tag in _MISTRAL_TAGS:
        text = text.replace(tag, " ")
    prompt_tokens = MESSAGE_OVERHEAD_TOKENS + len(text.split())
    words, stop = _reply(text, body.get("max_tokens"))
    reason = "length" if stop == "max_tokens" else "stop"
    if not stream:
        document = {"outputs": [{"text": " ".join(words), "stop_reason": reason}]}
        counts = [
            (b"X-Amzn-Bedrock-Input-Token-Count", str(prompt_tokens).encode()),
            (b"X-Amzn-Bedrock-Output-Token-Count", str(len(words)).encode()),
        ]
        await send_response(send, 200, orjson.dumps(document), [_JSON, *counts, *_request_id()])
        return
    chunks: list[dict[str, Any]] = [
        {"outputs": [{"text": word if i == 0 else f" {word}", "stop_reason": None}]}
        for i, word in enumerate(words)
    ]
    chunks[-1]["outputs"][0]["stop_reason"] = reason
    chunks[-1]["amazon-bedrock-invocationMetrics"] = {
        "inputTokenCount": prompt_tokens,
        "outputTokenCount": len(words),
        "invocationLatency": 42,
        "firstByteLatency": 7,
    }
    frames = [
        eventstream.event("chunk", _padded({"bytes": base64.b64encode(orjson.dumps(c)).decode()}))
        for c in chunks
    ]
    await _stream(send, frames, headers, deltas_from=0)


def _anthropic_prompt_tokens(body: Any) -> int:
    if not isinstance(body, dict):
        raise _Refused(400, "ValidationException", "Malformed input request")
    system = _text(body.get("system"))
    messages = body.get("messages") or []
    return sum(
        MESSAGE_OVERHEAD_TOKENS + len(_text(m.get("content")).split())
        for m in messages
        if isinstance(m, dict)
    ) + (MESSAGE_OVERHEAD_TOKENS + len(system.split()) if system else 0)


def _route(method: str, path: str) -> tuple[str, str]:
    if method != "POST" or not path.startswith("/model/"):
        raise _Refused(404, "UnknownOperationException", "Unknown operation")
    model, _, operation = path[len("/model/") :].rpartition("/")
    if not model or operation not in _OPERATIONS:
        raise _Refused(404, "UnknownOperationException", "Unknown operation")
    return unquote(model), operation


def _text(content: Any) -> str:
    """The text of Converse content blocks, Anthropic content, or a string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


def _reply(last: str, limit: Any) -> tuple[list[str], str]:
    words = [REPLY_PREFIX, *last.split()]
    if isinstance(limit, int) and 0 < limit < len(words):
        return words[:limit], "max_tokens"
    return words, "end_turn"


def _padded(payload: dict[str, Any]) -> bytes:
    # AWS pads event payloads with a "p" field of varying length (against traffic analysis).
    return orjson.dumps({**payload, "p": _PADDING[: 1 + len(payload) * 7 % len(_PADDING)]})


def _request_id() -> Headers:
    return [(b"x-amzn-requestid", str(uuid.uuid4()).encode())]


async def _stream(
    send: Send, frames: list[bytes], headers: dict[str, str], *, deltas_from: int = 1
) -> None:
    """Send ``frames``, honouring the cut, corrupt and stream-error knobs (counted in deltas)."""
    cut = headers.get("x-fake-cut", "")
    corrupt = headers.get("x-fake-corrupt", "")
    after, _, exception_type = headers.get("x-fake-stream-error", "").partition(":")
    start = {"type": "http.response.start", "status": 200}
    await send({**start, "headers": [_EVENT_STREAM, *_request_id()]})
    for index, frame in enumerate(frames):
        if cut.isdigit() and index == deltas_from + int(cut):
            raise ConnectionAbortedError("fake bedrock cut the stream (asked by the test)")
        if after.isdigit() and exception_type and index == deltas_from + int(after):
            # As AWS does: an exception frame, then the end of the stream.
            message = f"fake bedrock: {exception_type} (asked by the test)"
            frame = eventstream.exception(exception_type, orjson.dumps({"message": message}))
            await send({"type": "http.response.body", "body": frame, "more_body": False})
            return
        if corrupt.isdigit() and index == deltas_from + int(corrupt):
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _vector(text: str, size: int = 8) -> list[float]:
    return [round((len(text.split()) + i) / (size + len(text) + 1), 6) for i in range(size)]


async def _embed(send: Send, model: str, body: dict[str, Any]) -> None:
    """InvokeModel of an embedding model: Titan Text Embeddings (``inputText`` ->
    ``embedding`` + ``inputTextTokenCount``) or Cohere Embed (``texts`` -> ``embeddings``, no
    count in the body). Both answers carry ``x-amzn-bedrock-input-token-count``. Tokens = words."""
    if ".cohere." in f".{model}" or model.startswith("cohere."):
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not isinstance(body.get("input_type"), str):
            raise _Refused(400, "ValidationException", "Malformed input request: texts, input_type")
        tokens = sum(len(str(t).split()) for t in texts)
        document: dict[str, Any] = {
            "embeddings": [_vector(str(t)) for t in texts],
            "id": str(uuid.uuid4()),
            "response_type": "embeddings_floats",
            "texts": texts,
        }
    else:
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise _Refused(400, "ValidationException", "Malformed input request: inputText")
        tokens = len(text.split())
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) else 8
        document = {"embedding": _vector(text, size), "inputTextTokenCount": tokens}
    headers = [
        _JSON,
        (b"x-amzn-bedrock-input-token-count", str(tokens).encode()),
        *_request_id(),
    ]
    await send_response(send, 200, orjson.dumps(document), headers)


async def _error(send: Send, refused: _Refused) -> None:
    # Bedrock names the error in x-amzn-ErrorType (botocore reads the part before ":").
    error_type = f"{refused.error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    headers = [_JSON, (b"x-amzn-ErrorType", error_type.encode()), *_request_id()]
    await send_response(send, refused.status, orjson.dumps({"message": refused.message}), headers)


async def _sts_error(send: Send, refused: _Refused) -> None:
    # STS speaks the query protocol: its errors are XML.
    code = {"InvalidSignatureException": "SignatureDoesNotMatch"}.get(
        refused.error_type, refused.error_type
    )
    xml = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>{refused.message}</Message>"
        f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    await send_response(send, refused.status, xml.encode(), [(b"content-type", b"text/xml")])


async def _serve(host: str, port: int) -> None:
    async with serve_http(FakeBedrock(), host=host, port=port) as address:
        print(f"fake bedrock listening on {address.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.testing.fake_bedrock --listen HOST:PORT``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.fake_bedrock", description=__doc__
    )
    parser.add_argument("--listen", default="127.0.0.1:8902", help="HOST:PORT (port 0: any)")
    args = parser.parse_args(argv)
    host, port = split_host_port(args.listen)
    print(f"test key pair: {TEST_ACCESS_KEY_ID} {TEST_SECRET_ACCESS_KEY}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
