"""A fake Gemini API and Vertex AI provider (and Google OAuth2 token endpoint) for tests.

It speaks Gemini's wire format with deterministic token counts:

- ``POST /v1beta/models/{model}:generateContent`` answers a ``GenerateContentResponse``
  (``candidates``, ``usageMetadata``, ``modelVersion``, ``responseId``);
- ``:streamGenerateContent?alt=sse`` answers SSE frames ``data: {GenerateContentResponse}``
  (one per reply word, each with the cumulative ``usageMetadata``, the last with
  ``finishReason``; no ``[DONE]``), and without ``alt=sse`` one JSON array of those responses;
- ``:countTokens`` answers ``{"totalTokens": N}``;
- Vertex AI: the same under ``/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:...``
  (and ``/v1beta1``, and ``.../endpoints/{id}:...``), authenticated by ``Authorization:
  Bearer <token>`` where the token must be one the fake's ``FakeGoogleOAuth`` issued, unexpired
  and not revoked.

Counts (proto3 JSON: a count of 0 is left out, as Google does):

- prompt: for ``systemInstruction`` (if any) and each content, 3 + the words of its parts'
  texts (a ``functionResponse`` counts the words of its JSON);
- ``cachedContentTokenCount``: implicit caching, the system instruction's tokens when the same
  system text was seen before (included in ``promptTokenCount``, as Google reports it);
- ``toolUsePromptTokenCount``: ``TOOL_USE_PROMPT_TOKENS`` when a built-in tool
  (``googleSearch``, ``codeExecution``) is declared;
- ``thoughtsTokenCount``: ``min(thinkingBudget, THOUGHT_TOKENS)`` when
  ``generationConfig.thinkingConfig.thinkingBudget`` > 0 (with ``includeThoughts``, a thought
  part ``{"text": ..., "thought": true}`` comes first);
- the reply is ``"fake reply:"`` plus the words of the last text, cut to ``maxOutputTokens``
  words (``finishReason`` ``MAX_TOKENS``); ``candidatesTokenCount`` = its words times
  ``candidateCount``. With ``toolConfig.functionCallingConfig.mode`` ``ANY`` the reply is one
  ``functionCall`` of the first allowed (or declared) function with args
  ``{"query": <last text>}``, ``candidatesTokenCount`` = its words + 5;
- ``totalTokenCount`` = prompt + tool-use prompt + candidates + thoughts.

Auth (Gemini API): the ``x-goog-api-key`` header or the ``key`` query parameter must equal the
configured key (default: any key starting ``AIza``); none answers 403 ``PERMISSION_DENIED``, a
wrong one 400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, as Google does. Errors are
``{"error": {"code", "message", "status"}}``. Knobs: ``status=N`` answers every request with
status N; header ``x-fake-status: N`` one request; ``cut_after=K`` ends a stream's connection
after K frames (no finishReason, no last chunk); header ``x-fake-stream-error: K:CODE`` ends
an SSE stream after K frames with Google's error frame, ``data: {"error": {"code": CODE,
"message", "status"}}`` (500: Google's "An internal error has occurred" message). Requests are
recorded in ``requests``.

``:embedContent`` / ``:batchEmbedContents`` answer ``{"embedding": {"values"}}`` /
``{"embeddings": [{"values"}]}`` (``embedding(text, outputDimensionality)``, 8 values by
default) and, like the Gemini API, no usage; Vertex AI's ``:embedContent`` adds its
``usageMetadata`` (``promptTokenCount`` = 3 + the words of the text) and ``truncated``. Vertex AI's
``:predict`` (text-embedding models) takes ``{"instances": [{"content"}], "parameters":
{"outputDimensionality"}}`` and answers ``{"predictions": [{"embeddings": {"statistics":
{"truncated", "token_count"}, "values"}}], "metadata": {"billableCharacterCount"}}``,
``token_count`` = 3 + the words of the content (a gemini-embedding model takes one instance per
call, as Vertex AI's do: more answer 400).

Run it with ``python -m dataplane.testing.fake_gemini --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, read_body, send_response
from dataplane.http.server import serve_http, split_host_port
from dataplane.testing.fake_openai import MESSAGE_OVERHEAD_TOKENS, REPLY_PREFIX, RecordedRequest

TOOL_CALL_OVERHEAD_TOKENS = 5
TOOL_USE_PROMPT_TOKENS = 9
THOUGHT_TOKENS = 12
THOUGHT_TEXT = "thinking about the question"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
# The length of the fake's embeddings unless a request names outputDimensionality.
EMBEDDING_DIMENSIONS = 8
_BUILT_IN_TOOLS = ("googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext")
_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):([A-Za-z]+)$")
_VERTEX_PATH = re.compile(
    r"^/v1(?:beta1)?/projects/([^/]+)/locations/([^/]+)/"
    r"(?:publishers/google/models/([^/:]+)|endpoints/([^/:]+)):([A-Za-z]+)$"
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Google's message of an INTERNAL error, as a stream that fails mid-way ends with it.
_INTERNAL = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_BAD_TOKEN = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def field_of(document: Any, name: str) -> Any:
    """``document[name]`` by its lowerCamel JSON name or its proto name (Google accepts both)."""
    if not isinstance(document, dict):
        return None
    if name in document:
        return document[name]
    return document.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name))


def error_document(status: int, message: str, *, reason: str | None = None) -> dict[str, Any]:
    """A Google API error document."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
    }
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    return {"error": error}


def parts_text(parts: Any) -> str:
    """The words of a content's parts (texts, function calls' args, function responses)."""
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(field_of(part, "functionResponse"), dict):
            response = field_of(part, "functionResponse").get("response", {})
            texts.append(orjson.dumps(response).decode())
        elif isinstance(field_of(part, "functionCall"), dict):
            texts.append(orjson.dumps(field_of(part, "functionCall").get("args", {})).decode())
    return " ".join(texts)


def _tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + len(text.split())


def _system_text(body: dict[str, Any]) -> str | None:
    system = field_of(body, "systemInstruction")
    if isinstance(system, dict):
        return parts_text(system.get("parts"))
    return None


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens (cached content included)."""
    total = sum(
        _tokens(parts_text(content.get("parts")))
        for content in body.get("contents") or ()
        if isinstance(content, dict)
    )
    system = _system_text(body)
    if system is not None:
        total += _tokens(system)
    return total


def last_text(body: dict[str, Any]) -> str:
    """The text of the last content."""
    contents = [c for c in body.get("contents") or () if isinstance(c, dict)]
    return parts_text(contents[-1].get("parts")) if contents else ""


def _config(body: dict[str, Any]) -> dict[str, Any]:
    config = field_of(body, "generationConfig")
    return config if isinstance(config, dict) else {}


def _chosen_function(body: dict[str, Any]) -> str | None:
    calling = field_of(field_of(body, "toolConfig"), "functionCallingConfig")
    if not isinstance(calling, dict) or calling.get("mode") != "ANY":
        return None
    allowed = field_of(calling, "allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        return str(allowed[0])
    for tool in body.get("tools") or ():
        declarations = field_of(tool, "functionDeclarations")
        if isinstance(declarations, list) and declarations:
            return str(declarations[0].get("name", ""))
    return None


@dataclass
class _Reply:
    parts: list[dict[str, Any]]
    pieces: list[dict[str, Any]]  # the parts as streamed, one per frame
    finish: str
    candidate_tokens: int  # of one candidate


def _reply(body: dict[str, Any]) -> _Reply:
    text = last_text(body)
    function = _chosen_function(body)
    if function is not None:
        call = {"functionCall": {"name": function, "args": {"query": text}}}
        return _Reply([call], [call], "STOP", len(text.split()) + TOOL_CALL_OVERHEAD_TOKENS)
    words = [*REPLY_PREFIX.split(), *text.split()]
    finish = "STOP"
    limit = field_of(_config(body), "maxOutputTokens")
    if isinstance(limit, int) and len(words) > limit:
        words, finish = words[:limit], "MAX_TOKENS"
    pieces = [{"text": word if i == 0 else " " + word} for i, word in enumerate(words)]
    return _Reply([{"text": " ".join(words)}], pieces, finish, len(words))


@functools.cache
def _key_pair() -> tuple[str, bytes]:
    """One RSA key pair per process (making one takes a while): private PEM, public PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@dataclass
class FakeGoogleOAuth:
    """Google's OAuth2 token endpoint for service accounts (the JWT bearer grant).

    ``service_account(token_uri)`` makes a key pair and returns the JSON key a data plane is
    configured with; ``POST /token`` verifies the signed assertion (issuer, audience, scope)
    with its public key and issues ``ya29.fake-N`` access tokens valid ``expires_in`` seconds.
    """

    expires_in: int = 3600
    clock: Callable[[], float] = time.time
    # Errors to answer instead of a token (an OAuth error code, e.g. "invalid_grant").
    fail_with: str | None = None
    issued: dict[str, float] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    _public_keys: dict[str, bytes] = field(default_factory=dict)

    def service_account(
        self, token_uri: str, email: str = "gateway@proj.iam.gserviceaccount.com"
    ) -> dict[str, str]:
        """A service account JSON key (dict) whose token_uri is ``token_uri``."""
        private, public = _key_pair()
        self._public_keys[email] = public
        return {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": uuid.uuid4().hex,
            "private_key": private,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }

    def valid(self, token: str) -> bool:
        """Whether ``token`` was issued here, is unexpired and not revoked."""
        expires_at = self.issued.get(token)
        return expires_at is not None and expires_at > self.clock() and token not in self.revoked

    def revoke_all(self) -> None:
        """Make every token issued so far invalid (as an expired or revoked token is)."""
        self.revoked.update(self.issued)

    def answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to a form-encoded request body."""
        from google.auth import jwt

        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}
        assertion = (form.get("assertion") or [""])[0]
        try:
            claims = jwt.decode(assertion, verify=False)
            public_key = self._public_keys[str(claims.get("iss"))]
            # google-auth signs for Google's token endpoint whatever token_uri it posts to.
            claims = jwt.decode(assertion, certs=public_key, audience=GOOGLE_TOKEN_AUDIENCE)
        except (ValueError, KeyError):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope")):
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."}
        if self.fail_with is not None:
            return 400, {"error": self.fail_with, "error_description": "Refused by the fake."}
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued[token] = self.clock() + self.expires_in
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}


class FakeGemini:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        oauth: FakeGoogleOAuth | None = None,
        status: int | None = None,
        cut_after: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.oauth = oauth or FakeGoogleOAuth()
        self.status = status
        self.cut_after = cut_after
        self.requests: list[RecordedRequest] = []
        self._seen_systems: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        raw = await read_body(receive, limit=64 * 1024 * 1024)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        query = parse_qs(scope["query_string"].decode())
        if path == "/token" and method == "POST":
            status, document = self.oauth.answer(parse_qs(raw.decode()))
            await send_response(send, status, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(RecordedRequest(method=method, path=path, headers=headers, body=body))
        gemini, vertex = _GEMINI_PATH.match(path), _VERTEX_PATH.match(path)
        if method != "POST" or (gemini is None and vertex is None):
            await _error(send, 404, f"The requested URL {path} was not found on this server.")
            return
        if gemini is not None:
            model, operation = gemini.group(1), gemini.group(2)
            refusal = self._check_key(headers, query)
        else:
            assert vertex is not None
            model = vertex.group(3) or f"endpoint-{vertex.group(4)}"
            operation = vertex.group(5)
            refusal = self._check_token(headers)
        if refusal is not None:
            await _send_error(send, refusal)
            return
        forced = headers.get("x-fake-status", "")
        if self.status is not None or forced.isdigit():
            code = self.status if self.status is not None else int(forced)
            await _error(send, code, f"Forced status {code}")
            return
        if operation not in (
            "generateContent",
            "streamGenerateContent",
            "countTokens",
            "embedContent",
            "batchEmbedContents",
        ) and (operation != "predict" or vertex is None):
            await _error(send, 404, f"Method {operation} not found.")
            return
        if not isinstance(body, dict):
            await _error(send, 400, "Invalid JSON payload received.")
            return
        if operation == "predict":
            await _predict(send, body, model)
            return
        if operation in ("embedContent", "batchEmbedContents"):
            await _embed(
                send,
                body,
                model,
                batch=operation == "batchEmbedContents",
                vertex=vertex is not None,
            )
            return
        if operation == "countTokens":
            request = field_of(body, "generateContentRequest") or body
            total = prompt_tokens(request if isinstance(request, dict) else {})
            await send_response(
                send, 200, orjson.dumps({"totalTokens": total}), [JSON_CONTENT_TYPE]
            )
            return
        problem = _check_body(body)
        if problem is not None:
            await _error(send, 400, problem)
            return
        if operation == "generateContent":
            document = self._response(body, model, self._usage(body, _reply(body)), _reply(body))
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        await self._stream(
            send,
            body,
            model,
            sse=query.get("alt") == ["sse"],
            stream_error=headers.get("x-fake-stream-error", ""),
        )

    def _check_key(
        self, headers: dict[str, str], query: dict[str, list[str]]
    ) -> dict[str, Any] | None:
        key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
        if not key:
            return error_document(403, _NO_KEY, reason="SERVICE_DISABLED")
        if key != self.api_key if self.api_key is not None else not key.startswith("AIza"):
            return error_document(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        return None

    def _check_token(self, headers: dict[str, str]) -> dict[str, Any] | None:
        authorization = headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ")
        if not authorization.startswith("Bearer ") or not self.oauth.valid(token):
            return error_document(401, _BAD_TOKEN, reason="ACCESS_TOKEN_TYPE_UNSUPPORTED")
        return None

    def _usage(
        self, body: dict[str, Any], reply: _Reply, *, upto: int | None = None
    ) -> dict[str, Any]:
        """``usageMetadata`` of the whole reply, or of its first ``upto`` pieces (a stream)."""
        prompt = prompt_tokens(body)
        system = _system_text(body)
        cached = 0
        if system is not None and system in self._seen_systems:
            cached = _tokens(system)
        config = _config(body)
        budget = field_of(field_of(config, "thinkingConfig"), "thinkingBudget")
        thoughts = min(budget, THOUGHT_TOKENS) if isinstance(budget, int) and budget > 0 else 0
        tool_prompt = (
            TOOL_USE_PROMPT_TOKENS
            if any(
                any(field_of(tool, name) is not None for name in _BUILT_IN_TOOLS)
                for tool in body.get("tools") or ()
            )
            else 0
        )
        n = field_of(config, "candidateCount")
        n = n if isinstance(n, int) and n > 0 else 1
        one = reply.candidate_tokens
        if upto is not None and upto < len(reply.pieces):
            one = len(parts_text(reply.pieces[:upto]).split()) if reply.pieces else 0
        candidates = one * n
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "cachedContentTokenCount": cached,
            "toolUsePromptTokenCount": tool_prompt,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + tool_prompt + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        # proto3 JSON leaves zero counts out.
        return {key: value for key, value in usage.items() if value}

    def _candidates(
        self, body: dict[str, Any], parts: list[dict[str, Any]], finish: str | None
    ) -> list[dict[str, Any]]:
        n = field_of(_config(body), "candidateCount")
        n = n if isinstance(n, int) and n > 0 else 1
        candidates = []
        for index in range(n):
            candidate: dict[str, Any] = {
                "content": {"parts": parts, "role": "model"},
                "index": index,
            }
            if finish is not None:
                candidate["finishReason"] = finish
            candidates.append(candidate)
        return candidates

    def _thought(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        thinking = field_of(_config(body), "thinkingConfig")
        if field_of(thinking, "includeThoughts"):
            return [{"text": THOUGHT_TEXT, "thought": True}]
        return []

    def _remember_system(self, body: dict[str, Any]) -> None:
        system = _system_text(body)
        if system is not None:
            self._seen_systems.add(system)

    def _response(
        self, body: dict[str, Any], model: str, usage: dict[str, Any], reply: _Reply
    ) -> dict[str, Any]:
        self._remember_system(body)
        return {
            "candidates": self._candidates(
                body, [*self._thought(body), *reply.parts], reply.finish
            ),
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }

    async def _stream(
        self, send: Send, body: dict[str, Any], model: str, *, sse: bool, stream_error: str = ""
    ) -> None:
        reply = _reply(body)
        response_id = uuid.uuid4().hex[:22]
        frames: list[dict[str, Any]] = []
        count = len(reply.pieces)
        for i, piece in enumerate(reply.pieces):
            last = i == count - 1
            parts = [*self._thought(body), piece] if i == 0 else [piece]
            frames.append(
                {
                    "candidates": self._candidates(body, parts, reply.finish if last else None),
                    "usageMetadata": self._usage(body, reply, upto=i + 1),
                    "modelVersion": model,
                    "responseId": response_id,
                }
            )
        self._remember_system(body)
        if not sse:
            payload = b"[" + b",\r\n".join(orjson.dumps(frame) for frame in frames) + b"]"
            await send_response(send, 200, payload, [JSON_CONTENT_TYPE])
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        after, _, code = stream_error.partition(":")
        if after.isdigit() and code.isdigit():
            status = int(code)
            message = _INTERNAL if status == 500 else f"Forced stream error {status}"
            frames[int(after) :] = [error_document(status, message)]
        for i, frame in enumerate(frames):
            if self.cut_after is not None and i >= self.cut_after:
                return  # the connection ends without the stream's end: a cut
            data = b"data: " + orjson.dumps(frame) + b"\r\n\r\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _check_body(body: dict[str, Any]) -> str | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    for content in contents:
        if not isinstance(content, dict):
            return "Invalid value at 'contents': expected an object."
        if content.get("role", "user") not in ("user", "model"):
            return "Please use a valid role: user, model."
        if not isinstance(content.get("parts"), list):
            return "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n"
    return None


async def _send_error(send: Send, document: dict[str, Any]) -> None:
    status = int(document["error"]["code"])
    await send_response(send, status, orjson.dumps(document), [JSON_CONTENT_TYPE])


async def _error(send: Send, status: int, message: str) -> None:
    await _send_error(send, error_document(status, message))


async def _serve(host: str, port: int, api_key: str | None) -> None:
    async with serve_http(FakeGemini(api_key=api_key), host=host, port=port) as address:
        print(f"fake gemini listening on {address.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.testing.fake_gemini --listen HOST:PORT [--api-key KEY]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.fake_gemini", description=__doc__
    )
    parser.add_argument("--listen", default="127.0.0.1:8902", help="HOST:PORT (port 0: any)")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: AIza*)")
    args = parser.parse_args(argv)
    host, port = split_host_port(args.listen)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, args.api_key))
    return 0


def embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's deterministic embedding of ``text``: ``dimensions`` values from its words."""
    words = text.split()
    return [round((len(words) + i) / (dimensions + len(text) + 1), 6) for i in range(dimensions)]


async def _embed(
    send: Send, body: dict[str, Any], model: str, *, batch: bool, vertex: bool = False
) -> None:
    """embedContent / batchEmbedContents: one embedding per content; like Gemini's answers,
    no usage (the API reports none for embeddings), but Vertex AI's embedContent reports the
    prompt's tokens."""
    requests = body.get("requests") if batch else [body]
    if not isinstance(requests, list) or not requests:
        await _error(send, 400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        return
    embeddings = []
    for request in requests:
        content = request.get("content") if isinstance(request, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            await _error(send, 400, "* EmbedContentRequest.content: contents is not specified")
            return
        named = request.get("model")
        if batch and named != f"models/{model}":
            await _error(send, 400, f"Model {named} in the request does not match models/{model}.")
            return
        text = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        size = request.get("outputDimensionality") or EMBEDDING_DIMENSIONS
        embeddings.append({"values": embedding(text, int(size))})
    document: dict[str, Any] = {"embeddings": embeddings} if batch else {"embedding": embeddings[0]}
    if vertex and not batch:
        tokens = _tokens(text)
        document["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        document["truncated"] = False
    await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])


async def _predict(send: Send, body: dict[str, Any], model: str) -> None:
    """Vertex AI's predict on a text-embedding model: one prediction per instance, each with
    its token count."""
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        await _error(send, 400, "Invalid JSON payload: instances is required.")
        return
    if "gemini" in model and len(instances) > 1:
        await _error(send, 400, "Only one instance per request is supported for this model.")
        return
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    assert isinstance(parameters, dict)
    size = parameters.get("outputDimensionality") or EMBEDDING_DIMENSIONS
    predictions = []
    characters = 0
    for instance in instances:
        content = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(content, str):
            await _error(send, 400, "Invalid instance: content must be a string.")
            return
        characters += len(content.replace(" ", ""))
        statistics = {"truncated": False, "token_count": _tokens(content)}
        values = embedding(content, int(size))
        predictions.append({"embeddings": {"statistics": statistics, "values": values}})
    document = {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
    await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])


if __name__ == "__main__":
    sys.exit(main())
