"""Google's Gemini API wire format (Gemini API and Vertex AI): URLs, usage, streams, errors.

A request names its model and operation in the path (``models/{model}:generateContent``,
``:streamGenerateContent?alt=sse``, ``:countTokens``). A response (``GenerateContentResponse``)
carries ``usageMetadata``; a stream is SSE whose every ``data:`` frame is a whole
``GenerateContentResponse`` and whose ``usageMetadata`` is cumulative, so the last one holds
the request's counts (a stream cut short is metered as far as its last frame). There is no
``[DONE]``: the stream ends after the frame with ``finishReason``.

Usage onto Meterline's disjoint kinds, each token once:

- ``promptTokenCount`` includes ``cachedContentTokenCount``: input = prompt - cached,
  cached_input = cached;
- ``toolUsePromptTokenCount`` (tool results fed back to the model) is prompt too: added to input;
- ``candidatesTokenCount`` = output; ``thoughtsTokenCount`` = reasoning (not in candidates).

So input + cached_input + output + reasoning == ``totalTokenCount`` (prompt + tool-use prompt +
candidates + thoughts). Counts are proto3 JSON: a zero count is omitted, so inside a reported
``usageMetadata`` an absent prompt or candidates count is 0.

Errors are ``{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode, urlsplit

import orjson

from dataplane.errors import Rejection
from dataplane.http.sse import event_data
from dataplane.usage.tokens import TokenUsage, count, minus

if TYPE_CHECKING:
    from dataplane.config.model import ProviderTarget

GENERATE: Final = "generateContent"
STREAM_GENERATE: Final = "streamGenerateContent"
COUNT_TOKENS: Final = "countTokens"
OPERATIONS: Final = frozenset({GENERATE, STREAM_GENERATE, COUNT_TOKENS})
# The operations of an llm/v1/embeddings route (and countTokens); ``predict`` is Vertex AI's
# for its text-embedding models (instances in, predictions with token counts out).
EMBED: Final = "embedContent"
BATCH_EMBED: Final = "batchEmbedContents"
PREDICT: Final = "predict"
EMBED_OPERATIONS: Final = frozenset({EMBED, BATCH_EMBED, PREDICT, COUNT_TOKENS})

# A Vertex AI URL (its path names a project and a location), as opposed to the Gemini API's.
_VERTEX_URL: Final = re.compile(r"/projects/[^/]+/locations/[^/]+/")

# Placeholders of a provider target's URL template (filled per request).
MODEL_PLACEHOLDER: Final = "{model}"
OPERATION_PLACEHOLDER: Final = "{operation}"

# ``models/{model}:{operation}`` at the end of a client's path (Gemini API and Vertex AI paths
# both end so: .../publishers/google/models/{model}:{operation}).
_MODEL_OPERATION: Final = re.compile(r"(?:^|/)models/([^/:]+):([A-Za-z]+)/?$")

# HTTP status -> google.rpc.Code name (cloud.google.com/apis/design/errors).
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# google.rpc.Code name -> HTTP status (the reverse of the table above, for errors that carry a
# name but no code).
_NAME_STATUSES: Final = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def error_status(error: Any) -> int:
    """The HTTP status of a Google error object: its ``code``, else its ``status`` name's,
    else 500."""
    if not isinstance(error, dict):
        return 500
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return _NAME_STATUSES.get(str(error.get("status") or ""), 500)


def status_name(status: int) -> str:
    """The google.rpc.Code name of an HTTP status."""
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    return "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"


def google_error_body(status: int, message: str, *, reason: str | None = None) -> bytes:
    """An error document in Google's shape; ``reason`` goes into a google.rpc.ErrorInfo."""
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name(status)}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "meterline",
            }
        ]
    return orjson.dumps({"error": error})


def google_rejection_body(rejection: Rejection) -> bytes:
    """A refused request as Google's error document (the gateway's code as the reason)."""
    return google_error_body(rejection.status, rejection.message, reason=rejection.code)


def parse_model_operation(subpath: str) -> tuple[str, str] | None:
    """``(model, operation)`` named by the end of a client's path, or None."""
    found = _MODEL_OPERATION.search(subpath)
    if found is None:
        return None
    return found.group(1), found.group(2)


def operation_url(target: ProviderTarget, *, model: str, operation: str, stream: bool) -> str:
    """The upstream URL of one call: the target's URL with model and operation filled in, its
    auth query parameters, and ``alt=sse`` for a stream."""
    url = target.url.replace(MODEL_PLACEHOLDER, quote(model, safe="")).replace(
        OPERATION_PLACEHOLDER, operation
    )
    params = list(target.auth_query)
    if stream and "alt=sse" not in urlsplit(url).query:
        params.append(("alt", "sse"))
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def usage_from_gemini(metadata: Any) -> TokenUsage | None:
    """The disjoint token kinds of a ``usageMetadata`` object (None if there is none)."""
    if not isinstance(metadata, dict):
        return None
    prompt = count(metadata.get("promptTokenCount")) or 0
    cached = count(metadata.get("cachedContentTokenCount"))
    # A cache larger than its prompt is malformed; capping keeps the sum equal to the total.
    cached = min(cached, prompt) if cached is not None else None
    tool_prompt = count(metadata.get("toolUsePromptTokenCount")) or 0
    return TokenUsage(
        input_tokens=(minus(prompt, cached) or 0) + tool_prompt,
        output_tokens=count(metadata.get("candidatesTokenCount")) or 0,
        cached_input_tokens=cached,
        reasoning_tokens=count(metadata.get("thoughtsTokenCount")),
    )


def is_vertex(url: str) -> bool:
    """Whether a target URL (template) is Vertex AI's."""
    return _VERTEX_URL.search(urlsplit(url).path) is not None


def predict_texts(document: Any) -> list[str] | None:
    """The texts of a Vertex AI embeddings ``:predict`` body (``instances[].content``), for
    an estimate; None if it is not one."""
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list):
        return None
    texts = []
    for instance in instances:
        content = instance.get("content") if isinstance(instance, dict) else None
        if isinstance(content, str):
            texts.append(content)
    return texts


def usage_from_predict(document: Any) -> TokenUsage | None:
    """The input tokens of a Vertex AI embeddings ``:predict`` answer: the sum of its
    ``predictions[].embeddings.statistics.token_count`` (the tokens Vertex AI bills), or None
    unless every prediction reports one."""
    predictions = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(predictions, list) or not predictions:
        return None
    total = 0
    for prediction in predictions:
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        statistics = embeddings.get("statistics") if isinstance(embeddings, dict) else None
        value = statistics.get("token_count") if isinstance(statistics, dict) else None
        # predictions are google.protobuf.Value: numbers are doubles, so 6.0 may come for 6.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        tokens = count(value)
        if tokens is None:
            return None
        total += tokens
    return TokenUsage(input_tokens=total, output_tokens=0)


def predict_vectors(document: Any) -> list[Any] | None:
    """The vectors of a ``:predict`` answer (``predictions[].embeddings.values``), or None."""
    predictions = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(predictions, list):
        return None
    vectors = []
    for prediction in predictions:
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        values = embeddings.get("values") if isinstance(embeddings, dict) else None
        vectors.append(values if isinstance(values, list) else [])
    return vectors


def model_of(document: dict[str, Any]) -> str | None:
    """The model a response names (``modelVersion``, without a ``models/`` prefix)."""
    version = document.get("modelVersion")
    if isinstance(version, str) and version:
        return version.removeprefix("models/")
    return None


def candidate_texts(document: dict[str, Any]) -> list[str]:
    """The texts of a response's candidates (thought summaries included), for an estimate."""
    texts: list[str] = []
    for candidate in document.get("candidates") or ():
        content = candidate.get("content") if isinstance(candidate, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def read_response(body: bytes) -> tuple[dict[str, Any] | None, TokenUsage | None, str | None]:
    """The parsed document, usage and model of a whole ``GenerateContentResponse``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(document, dict):
        return None, None, None
    return document, usage_from_gemini(document.get("usageMetadata")), model_of(document)


class GeminiStreamScanner:
    """Reads usage and model from a Gemini SSE stream, frame by frame (the last usage wins).

    A stream that fails after its 200 ends with a frame that is a Google error document,
    ``data: {"error": {"code": 500, "message": ..., "status": "INTERNAL"}}`` (google-genai
    raises ``APIError`` with that code on it); its status is kept in ``error_status``.
    """

    __slots__ = ("error_status", "model", "texts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        # Text produced while no usage was reported, to estimate a stream that has none.
        self.texts: list[str] = []
        # The status of an error frame, if one came (the first one).
        self.error_status: int | None = None

    def accept(self, event: bytes) -> dict[str, Any] | None:
        """Inspect one whole event; return its parsed frame (None if it has no JSON object)."""
        data = event_data(event)
        if data is None:
            return None
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        if "error" in document:
            if self.error_status is None:
                self.error_status = error_status(document["error"])
            return document
        usage = usage_from_gemini(document.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
            self.texts = []
        elif self.usage is None:
            self.texts.extend(candidate_texts(document))
        model = model_of(document)
        if model is not None:
            self.model = model
        return document
