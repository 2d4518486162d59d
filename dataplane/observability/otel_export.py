"""The OpenTelemetry side of data-plane tracing: OTLP spans and GenAI metrics built in batches.

This runs in the data plane's exporter process (``otel_process``): the data plane
(``dataplane.observability.tracing``) ships it, in batches, every request's GenAI measurements
(``Measure``) and each sampled request's record (``TracedRequest``), all plain values; the
process counts the measurements in a ``MetricAggregator`` here and hands the records to an
``Exporter`` here, which

- encodes the sampled requests' spans straight into OTLP protobuf bytes (an
  ``ExportTraceServiceRequest``): the per-route attributes (operation, provider, models,
  route, consumer) are encoded once and reused, ids, times and the first-token event are two
  ``struct`` packs, the rest a few concatenations per span. The SDK's span objects
  (``ReadableSpan``, attribute validation, the batch span processor's queue and locks) cost
  more CPU than the request they described; none is made;
- folds the four gen_ai.* histograms' pending measurements into bucket counts, and every
  OTEL_METRIC_EXPORT_INTERVAL hands them to the SDK's metric exporter as one ``MetricsData``
  (cumulative temporality, the SDK's default);
- sends the span bytes through the SDK's own OTLP exporters (gRPC or HTTP/protobuf), so the
  endpoint, headers, TLS, compression, timeout and retries are the OTEL_* variables' as the SDK
  reads them.

The SDK still configures everything (sampler, resource, exporter selection); only the
per-span and per-measurement objects are gone.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from itertools import repeat
from random import getrandbits
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME: Final = "meterline-dataplane"
SCOPE_NAME: Final = "meterline.dataplane"
# Meterline provider names -> gen_ai.provider.name's well-known values (others as they are).
_PROVIDERS: Final = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "openai_compatible": "openai",
}


def provider_name(provider: str) -> str:
    return _PROVIDERS.get(provider, provider)


def signals_configured(environ: Mapping[str, str] | None = None) -> tuple[bool, bool]:
    """(traces, metrics): whether the OTEL_* variables ask for each to be exported.

    An OTLP endpoint turns both on; OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER set to
    ``otlp`` or ``console`` turn one on and ``none`` turns it off; OTEL_SDK_DISABLED wins."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False, False
    endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())

    def wanted(signal: str) -> bool:
        exporter = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
        if exporter:
            return exporter != "none"
        return endpoint or bool(env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip())

    return wanted("TRACES"), wanted("METRICS")


# The conventions' advised histogram boundaries.
_TOKEN_BUCKETS: Final = tuple(float(4**n) for n in range(14))
# The same bounds as ints, searched for token counts (ints): an int compared with an int is
# cheaper than with a float, and these bounds are exact either way.
_TOKEN_SEARCH: Final = tuple(4**n for n in range(14))
_DURATION_BUCKETS: Final = tuple(0.01 * 2**n for n in range(14))
_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip


class TracedAttempt(NamedTuple):
    """One upstream call, as the request path measured it (perf-counter nanoseconds).

    The request path builds plain tuples in this field order (a NamedTuple's ``__new__`` costs
    a Python call); this class names the fields for readers and tests."""

    number: int
    span_id: int
    provider: str
    model: str
    origin: str
    start_perf_ns: int
    end_perf_ns: int
    status: int
    failed_over: bool
    upstream_perf_ns: int | None
    first_byte_perf_ns: int | None


class Measure(NamedTuple):
    """The GenAI metrics' measurements of one request that is not sampled, as the data plane
    ships them to its exporter process (a plain tuple in this field order): durations in
    nanoseconds since the request's start, ``usage`` as in ``TracedRequest``."""

    operation: str
    provider: str
    request_model: str
    response_model: str
    route: str
    error_type: str
    status: int
    duration_ns: int
    first_byte_ns: int | None  # after the start
    usage: tuple[int | None, int | None, int | None, int | None, int | None] | None
    stream: bool


class TracedRequest(NamedTuple):
    """One request, after its last attempt (or refused before any): plain values only, a plain
    tuple in this field order on the request path. ``cost`` is a decimal string (``str`` of a
    ``Decimal``) or None by the time the exporter process reads it, ``response_id`` the
    response as the client got it until the encoder reads the id from it. ``error_type`` is
    set for requests the gateway refused itself (no attempt), ``content`` only when the route
    logs payloads and the content opt-in is set: (input messages JSON, output text)."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    tracestate: str
    sampled: bool
    request_id: str
    route: str
    consumer: str
    operation: str
    request_model: str
    response_model: str
    provider: str
    start_ns: int
    start_perf_ns: int
    end_perf_ns: int
    status: int
    # (input, output, cached input, reasoning, cache write) as TokenUsage keeps them.
    usage: tuple[int | None, int | None, int | None, int | None, int | None] | None
    estimated: bool
    stream: bool
    first_byte_perf_ns: int | None
    attempts: tuple[TracedAttempt, ...]
    params: tuple[tuple[str, int | float], ...]
    response_id: str
    finish_reasons: tuple[str, ...]
    error_type: str
    content: tuple[str | None, str | None] | None
    cost: Any


def gen_ai_tokens(usage: tuple[int | None, ...] | None) -> tuple[int | None, int | None]:
    """(input, output) as the conventions count them, from a record's usage tuple (input,
    output, cached input, reasoning, cache write as Meterline's events keep them apart): input
    includes the tokens read from and written to a cache, output includes reasoning."""
    if usage is None:
        return None, None
    input_tokens, output_tokens, cached, reasoning, cache_write = usage
    if input_tokens is not None:
        input_tokens += (cached or 0) + (cache_write or 0)
    if output_tokens is not None:
        output_tokens += reasoning or 0
    return input_tokens, output_tokens


# -- gen_ai.response.id and finish_reasons, from what the client got ---------------------------


_REASON_KEYS: Final = ("stop_reason", "stopReason", "finish_reason", "done_reason")


def _meta_of(document: Any, found: list[Any]) -> None:
    """Note the id (``found[0]``) and finish reasons (``found[1:]``) one response document
    (or stream event) carries, in any of the client formats: OpenAI chat/completions/Responses,
    Anthropic Messages (and its stream's message_start / message_delta), Gemini, Bedrock
    Converse, Cohere v2 (and its message-end delta), Ollama."""
    if type(document) is not dict:
        return
    get = document.get
    if not found[0]:
        ident = get("id") or get("responseId")
        if type(ident) is str:
            found[0] = ident
    items = get("choices") or get("candidates")
    if type(items) is list:
        for item in items:
            if type(item) is dict:
                reason = item.get("finish_reason") or item.get("finishReason")
                if type(reason) is str and reason:
                    found.append(reason)
    for key in _REASON_KEYS:
        reason = get(key)
        if type(reason) is str and reason:
            found.append(reason)
    for key in ("message", "response", "delta"):
        inner = get(key)
        if type(inner) is dict:
            _meta_of(inner, found)


def _documents(data: bytes) -> list[Any]:
    """The JSON documents of a body: one whole document, or SSE ``data:`` lines, or NDJSON."""
    if data[:1] == b"{":
        try:
            return [orjson.loads(data)]
        except orjson.JSONDecodeError:
            pass  # NDJSON: one object per line
    documents = []
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if line[:1] == b"{":
            try:
                documents.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return documents


# Bodies and events larger than this are not parsed again for a span.
_MAX_PARSED: Final = 4 * 1024 * 1024


_OPENAI_HEAD: Final = b'{"id":"'
# A byte as an int: ``int in bytes`` is a memchr, ``bytes in bytes`` first fails to read its
# operand as an int (an exception raised and cleared, ~2k instructions in CPython 3.11).
_BACKSLASH: Final = ord("\\")


def _openai_meta(body: bytes) -> tuple[str, tuple[str, ...]] | None:
    """The id and finish reasons of a chat or text completion as OpenAI and the servers
    compatible with it write one (compact JSON, the id its first key), found by splitting the
    body in C instead of parsing it (which cost as much as the rest of a span); None for any
    other body or anything unusual in it (an escape, another kind of reason key), which is then
    parsed.

    A key's quotes are its own (a quote inside a JSON string is escaped), so ``{"id":"`` at the
    start is the top-level id and each ``"finish_reason":"`` a reason; every key ending in
    ``reason``/``Reason`` is looked at."""
    head = body.split(b'"', 4)
    if len(head) < 5 or not head[3] or _BACKSLASH in head[3]:
        return None
    pieces = head[4].split(b'eason"')
    found: list[str] = []
    before = pieces[0]
    for after in pieces[1:]:
        finish = before[-9:] == b'"finish_r'
        if finish and after[:2] == b':"':
            reason = after[2:].partition(b'"')[0]
            if _BACKSLASH in reason:
                return None
            if reason:
                found.append(reason.decode())
        elif after[:5] != b":null" or not (finish or before[-7:] == b'"stop_r'):
            # Any other reason key (Anthropic's stop_reason, a camel-case one), or a finish
            # reason that is neither a string nor null (vLLM adds a null stop_reason): parsed.
            return None
        before = after
    return head[3].decode(), tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found)


def response_meta(response: Any) -> tuple[str, tuple[str, ...]]:
    """(gen_ai.response.id, gen_ai.response.finish_reasons) of what the client got: a whole
    body (bytes), a stream's ``StreamEnds`` or its ends as a tuple (first output, last
    outputs); ("", ()) when it has neither."""
    if type(response) is bytes and response[:7] == _OPENAI_HEAD:
        meta = _openai_meta(response)
        if meta is not None:
            return meta
    if type(response) is bytes and response[:1] == b"{" and len(response) <= _MAX_PARSED:
        # The usual whole body: one JSON object, parsed once.
        try:
            document = orjson.loads(response)
        except orjson.JSONDecodeError:
            document = None  # NDJSON, or not JSON: the general way below
        if type(document) is dict:
            found: list[Any] = [""]
            _meta_of(document, found)
            return found[0], (tuple(dict.fromkeys(found[1:])) if len(found) > 1 else ())
    if isinstance(response, (bytes, bytearray, memoryview)):
        chunks: list[bytes] = [bytes(response).strip()]
    elif type(response) is tuple:
        # A stream's ends as the data plane ships them: (first output, the last ones).
        if not response or not response[0]:
            return "", ()
        chunks = [response[0], *response[1]]
    else:
        first = getattr(response, "first", b"")
        if not first:
            return "", ()
        chunks = [first, *getattr(response, "last", ())]
    found = [""]
    for chunk in chunks:
        _chunk_meta(chunk, found)
    return found[0], tuple(dict.fromkeys(found[1:]))


def _chunk_meta(chunk: bytes, found: list[Any]) -> None:
    """Note the id and finish reasons of one output of a stream (a chunk of its events) in
    ``found``, parsing it only when it can add to them."""
    if len(chunk) > _MAX_PARSED:
        return  # not parsed again for a span
    if _REASON_STRING.search(chunk) is None:
        # No reason in it (every reason key ends in "eason"; a null one is not a reason): only
        # its id could count, which an OpenAI-format event's first key gives.
        if found[0]:
            return
        ident = _sse_openai_id(chunk)
        if ident:
            found[0] = ident
            return
    for document in _documents(chunk):
        _meta_of(document, found)


# A key ending in "eason" with a string value: a chunk without one holds no finish reason.
_REASON_STRING: Final = re.compile(rb'eason"\s*:\s*"')
_SSE_OPENAI_HEAD: Final = b'data: {"id":"'


def _sse_openai_id(chunk: bytes) -> str:
    """The id of a chunk whose first event is an OpenAI-format one (``data: {"id":"``), read
    without a parse; "" for any other chunk, or an id with an escape in it."""
    if not chunk.startswith(_SSE_OPENAI_HEAD):
        return ""
    end = chunk.find(b'"', len(_SSE_OPENAI_HEAD))
    if end == -1:
        return ""
    ident = chunk[len(_SSE_OPENAI_HEAD) : end]
    return "" if _BACKSLASH in ident else ident.decode()


# -- OTLP protobuf, by hand -------------------------------------------------------------------
# opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto: field numbers and wire
# types below. Tests parse the bytes with opentelemetry-proto's own classes.

_SMALL: Final = [bytes((n,)) for n in range(128)]
_Q: Final = struct.Struct("<Q").pack
_I: Final = struct.Struct("<I").pack
_U16: Final = struct.Struct("<H").pack
_D: Final = struct.Struct("<d").pack
_MASK64: Final = (1 << 64) - 1


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    n &= _MASK64  # int64 negatives: ten bytes, two's complement
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the bytes."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: object) -> bytes:
    """An AnyValue message's bytes."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _D(value)
    if isinstance(value, (list, tuple)):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    return _field(b"\x0a", str(value).encode())


def _key_value(key: str, value: object) -> bytes:
    """A KeyValue message's bytes (key, AnyValue)."""
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


def _attribute(key: str, value: object) -> bytes:
    """A span's attribute: field 9 (``repeated KeyValue attributes``)."""
    return _field(b"\x4a", _key_value(key, value))


class _Prefix:
    """Encodes attributes of one key fast: everything but the value's own bytes is encoded
    once, for the usual sizes (a KeyValue under 128 bytes): one concatenation per attribute."""

    __slots__ = ("_head", "_int_head", "int2_head", "small", "str_heads")

    def __init__(self, key: str) -> None:
        self._head = head = _field(b"\x0a", key.encode())
        # KeyValue length = head + 2 (value tag, AnyValue length) + AnyValue; for ints of one
        # and two varint bytes all but the value's bytes are fixed.
        self._int_head = _field(b"\x4a", head + b"\x12\x02\x18\x00")[:-1]
        self.int2_head = _field(b"\x4a", head + b"\x12\x03\x18\x00\x00")[:-2]
        # Whole attributes of the ints under 128 (token counts of short answers).
        self.small = [self._int_head + _SMALL[n] for n in range(128)]
        # Strings of each size whose attribute stays under 128 bytes: (size) -> the bytes
        # before the string's.
        self.str_heads = [
            b"\x4a" + _SMALL[len(head) + 4 + size] + head + b"\x12" + _SMALL[size + 2] + b"\x0a"
            + _SMALL[size]
            for size in range(128 - 4 - len(head))
        ]  # fmt: skip

    def int(self, value: int) -> bytes:
        if 0 <= value < 16384:
            if value < 128:
                return self._int_head + _SMALL[value]
            return self.int2_head + _U16((value & 0x7F) | 0x80 | (value >> 7) << 8)
        encoded = _varint(value)
        kv = self._head + b"\x12" + _varint(len(encoded) + 1) + b"\x18" + encoded
        return b"\x4a" + _varint(len(kv)) + kv

    def str(self, value: str) -> bytes:
        data = value.encode()
        heads = self.str_heads
        size = len(data)
        if size < len(heads):
            return heads[size] + data
        any_value = b"\x0a" + _varint(size) + data
        kv = self._head + b"\x12" + _varint(len(any_value)) + any_value
        return b"\x4a" + _varint(len(kv)) + kv


_REQUEST_ID = _Prefix("meterline.request_id")
_COST = _Prefix("meterline.cost")
_RESPONSE_ID = _Prefix("gen_ai.response.id")
_INPUT_MESSAGES = _Prefix("gen_ai.input.messages")
_OUTPUT_MESSAGES = _Prefix("gen_ai.output.messages")
_INPUT_TOKENS = _Prefix("gen_ai.usage.input_tokens")
_OUTPUT_TOKENS = _Prefix("gen_ai.usage.output_tokens")
_CACHE_READ_TOKENS = _Prefix("gen_ai.usage.cache_read.input_tokens")
_CACHE_WRITE_TOKENS = _Prefix("gen_ai.usage.cache_creation.input_tokens")
_REASONING_TOKENS = _Prefix("gen_ai.usage.reasoning.output_tokens")
_INPUT_SMALL: Final = _INPUT_TOKENS.small
_OUTPUT_SMALL: Final = _OUTPUT_TOKENS.small
_CACHE_READ_SMALL: Final = _CACHE_READ_TOKENS.small
_CACHE_WRITE_SMALL: Final = _CACHE_WRITE_TOKENS.small
_REASONING_SMALL: Final = _REASONING_TOKENS.small
_TTFT_KEY: Final = _key_value("gen_ai.server.time_to_first_token", 0.0)[:-8]  # + 8 bytes double
_KIND_CLIENT: Final = b"\x30\x03"
# Span fields 7 and 8 (start and end, fixed64) in one call.
_TIMES: Final = struct.Struct("<BQBQ").pack
_STATUS_ERROR_TAG: Final = b"\x7a"
# Span.flags (field 16, fixed32): sampled, and whether the parent is remote (bits 8 and 9).
_FLAGS_LOCAL_PARENT: Final = b"\x85\x01" + _I(0x101)
_FLAGS_REMOTE_PARENT: Final = b"\x85\x01" + _I(0x301)


_EVENT_NAME: Final = b"\x12\x12gen_ai.first_token"
_EVENT_ATTRIBUTE: Final = b"\x1a" + _varint(len(_TTFT_KEY) + 8) + _TTFT_KEY
# Span field 11, Event{time (fixed64), name, the time-to-first-token attribute (a double)}:
# all of fixed size, so one pack.
_EVENT_SIZE: Final = 1 + 8 + len(_EVENT_NAME) + len(_EVENT_ATTRIBUTE) + 8
_EVENT_HEAD: Final = b"\x5a" + _varint(_EVENT_SIZE)
_EVENT_MIDDLE: Final = _EVENT_NAME + _EVENT_ATTRIBUTE
# Span fields 1, 2 (and 4): trace id, span id (and parent id), big-endian as the ids' hex
# reads, then the flags (field 16): one pack.
_TRACE_TAG: Final = b"\x0a\x10"
_SPAN_TAG: Final = b"\x12\x08"
_PARENT_TAG: Final = b"\x22\x08"
_IDS: Final = struct.Struct(f">2sQQ2sQ{len(_FLAGS_LOCAL_PARENT)}s").pack
_IDS_PARENT: Final = struct.Struct(f">2sQQ2sQ2sQ{len(_FLAGS_LOCAL_PARENT)}s").pack
# Start and end (fields 7, 8) and the first-token event (field 11): one pack.
_TIMES_EVENT: Final = struct.Struct(f"<BQBQ{len(_EVENT_HEAD)}sBQ{len(_EVENT_MIDDLE)}sd").pack


def _span_head(heads: dict[int, bytes], size: int) -> bytes:
    """A ScopeSpans ``spans`` field's tag and length for a span of ``size`` bytes (kept in
    ``heads``: spans of one shape have a few sizes)."""
    if len(heads) > 4096:
        heads.clear()
    head = heads[size] = b"\x12" + _varint(size)
    return head


def _status_error(status: int, error_type: str = "") -> bytes:
    message = (f"HTTP {status} {error_type}" if error_type else f"HTTP {status}").encode()
    body = _field(b"\x12", message) + b"\x18\x02"  # STATUS_CODE_ERROR
    return _field(_STATUS_ERROR_TAG, body)


def _append_usage(parts: list[bytes], usage: Sequence[int | None]) -> None:
    """A request's token counts as the conventions count them: input with the cache reads and
    writes, output with reasoning (gen_ai_tokens), then the parts; absent counts left out."""
    value, output, cached, reasoning, written = usage
    append = parts.append
    if value is not None:
        value += (cached or 0) + (written or 0)
        append(_INPUT_SMALL[value] if 0 <= value < 128 else _INPUT_TOKENS.int(value))
    if output is not None:
        output += reasoning or 0
        append(_OUTPUT_SMALL[output] if 0 <= output < 128 else _OUTPUT_TOKENS.int(output))
    if cached is not None:
        append(_CACHE_READ_SMALL[cached] if 0 <= cached < 128 else _CACHE_READ_TOKENS.int(cached))
    if written is not None:
        append(
            _CACHE_WRITE_SMALL[written] if 0 <= written < 128 else _CACHE_WRITE_TOKENS.int(written)
        )
    if reasoning is not None:
        append(
            _REASONING_SMALL[reasoning]
            if 0 <= reasoning < 128
            else _REASONING_TOKENS.int(reasoning)
        )


def _append_cost(parts: list[bytes], cost: Any, request_id: str) -> None:
    """The request's cost: a decimal string (``str`` of a ``Decimal``: written without an
    exponent here), or the request's Metering.cost read now."""
    if type(cost) is str:
        if "E" in cost:
            cost = f"{Decimal(cost):f}"
    else:
        try:
            priced = cost()
        except Exception:
            logger.exception("request %s: could not price it", request_id)
            return
        if priced is None:
            return
        cost = f"{priced:f}"
    # A decimal string (priced by the data plane): money is never a float here either.
    parts.append(_COST.str(cost))


class SpanEncoder:
    """Requests -> OTLP Span messages (bytes), and batches of them -> ExportTraceServiceRequest.

    Attributes that repeat across requests (operation, provider, models, route, consumer,
    the request's sampling parameters) are encoded once and looked up."""

    def __init__(self, resource: Resource, version: str) -> None:
        resource_message = b"".join(
            _field(b"\x0a", _key_value(str(k), v)) for k, v in resource.attributes.items()
        )
        scope = _field(b"\x0a", SCOPE_NAME.encode()) + _field(b"\x12", version.encode())
        self._resource = _field(b"\x0a", resource_message)
        self._scope = _field(b"\x0a", scope)
        # The parts of spans that repeat across requests, by what they are made of.
        self._blocks: dict[tuple[Any, ...], bytes] = {}
        self._heads: dict[int, bytes] = {}

    def _block(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        found = self._blocks.get(key)
        if found is None:
            if len(self._blocks) > 50_000:
                self._blocks.clear()  # unbounded cardinality (models, consumers): start over
            found = self._blocks[key] = build()
        return found

    def _attempt_block(
        self, operation: str, provider: str, model: str, origin: str, status: int, number: int,
        failed_over: bool,
    ) -> bytes:  # fmt: skip
        """An attempt span's name, kind and attributes (and error status): all per-route."""
        parts = [
            _field(b"\x2a", f"{operation} {model}".encode()),
            _KIND_CLIENT,
            _attribute("gen_ai.operation.name", operation),
            _attribute("gen_ai.provider.name", provider_name(provider)),
            _attribute("gen_ai.request.model", model),
            _attribute("server.address", origin),
            _attribute("http.response.status_code", status),
            _attribute("meterline.attempt", number),
            _attribute("meterline.failed_over", failed_over),
        ]
        if not 200 <= status < 400:
            parts.append(_attribute("error.type", str(status)))
            parts.append(_status_error(status))
        return b"".join(parts)

    def _shared_request_block(
        self,
        operation: str,
        request_model: str,
        response_model: str,
        provider: str,
        route: str,
        consumer: str,
        stream: bool,
        estimated: bool,
        status: int,
        error_type: str,
        attempts: int,
        finish_reasons: tuple[str, ...],
        params: tuple[tuple[str, int | float], ...],
    ) -> bytes:
        """A request span's name, kind and the attributes that repeat across requests."""
        parts = [
            _field(
                b"\x2a", (f"{operation} {request_model}" if request_model else operation).encode()
            ),
            _KIND_CLIENT,
            _attribute("gen_ai.operation.name", operation),
            _attribute("gen_ai.provider.name", provider_name(provider)),
            _attribute("gen_ai.request.stream", stream),
            _attribute("http.response.status_code", status),
            _attribute("meterline.route", route),
            _attribute("meterline.usage.estimated", estimated),
            _attribute("meterline.attempts", attempts),
        ]
        if request_model:
            parts.append(_attribute("gen_ai.request.model", request_model))
        if consumer:
            parts.append(_attribute("meterline.consumer", consumer))
        if response_model:
            parts.append(_attribute("gen_ai.response.model", response_model))
        if finish_reasons:
            parts.append(_attribute("gen_ai.response.finish_reasons", finish_reasons))
        parts.extend(_attribute(name, value) for name, value in params)
        if not 200 <= status < 400:
            parts.append(_attribute("error.type", error_type or str(status)))
            parts.append(_status_error(status, error_type))
        return b"".join(parts)

    def _request_block(
        self,
        names: Sequence[str],
        stream: bool,
        estimated: bool,
        status: int,
        error_type: str,
        attempts: int,
        finish_reasons: tuple[str, ...],
        params: tuple[tuple[str, int | float], ...],
    ) -> bytes:
        """A request span's name, kind and the attributes that repeat across requests."""
        route, consumer, operation, request_model, response_model, provider = names
        return self._shared_request_block(
            operation, request_model, response_model, provider, route, consumer, stream,
            estimated, status, error_type, attempts, finish_reasons, params,
        )  # fmt: skip

    def request(self, record: Sequence[Any]) -> bytes:
        """The spans (attempts first, then the request) of one sampled request, each as a
        ScopeSpans ``spans`` field: ``export_request`` puts such chunks together.

        A span is a few pieces: its ids in one big-endian pack, its times (and first-token
        event) in one little-endian pack, the block of what it shares with other requests of
        its shape (names, attributes, flags), then the request's own attributes; protobuf
        fields may come in any order."""
        (
            trace_id,
            span_id,
            parent_span_id,
            tracestate,
            _sampled,
            request_id,
            _route,
            _consumer,
            operation,
            _request_model,
            _response_model,
            _provider,
            start_ns,
            start_perf_ns,
            end_perf_ns,
            status,
            usage,
            estimated,
            stream,
            first_byte_perf_ns,
            attempts,
            params,
            response_id,
            finish_reasons,
            error_type,
            content,
            cost,
        ) = record
        if type(response_id) is not str:
            # What the client got (a body, a stream's ends): read now, off the request path.
            response_id, reasons = response_meta(response_id)
            finish_reasons = finish_reasons or reasons
        blocks = self._blocks
        heads = self._heads
        offset = start_ns - start_perf_ns  # perf-counter instant -> Unix nanoseconds
        high, low = trace_id >> 64, trace_id & _MASK64
        # The request span's id is drawn here: only its attempts' ids went upstream.
        request_span_id = span_id or getrandbits(64) or 1
        state = b"" if not tracestate else _field(b"\x1a", tracestate.encode())
        out: list[bytes] = []
        for attempt in attempts:
            attempt_key = (operation, *attempt[2:5], attempt[7], attempt[0], attempt[8])
            block = blocks.get(attempt_key)
            if block is None:
                block = self._block(attempt_key, partial(self._attempt_block, *attempt_key))
            ids = _IDS_PARENT(
                _TRACE_TAG,
                high,
                low,
                _SPAN_TAG,
                attempt[1],
                _PARENT_TAG,
                request_span_id,
                _FLAGS_LOCAL_PARENT,
            )
            first_byte = attempt[10]
            start = attempt[5]
            times = (
                _TIMES(0x39, start + offset, 0x41, attempt[6] + offset)
                if first_byte is None
                else _TIMES_EVENT(
                    0x39,
                    start + offset,
                    0x41,
                    attempt[6] + offset,
                    _EVENT_HEAD,
                    0x09,
                    first_byte + offset,
                    _EVENT_MIDDLE,
                    (first_byte - start) / 1e9,
                )
            )
            size = len(ids) + len(times) + len(block) + len(state)
            out += (heads.get(size) or _span_head(heads, size), ids, times, block, state)
        key = (
            record[6:12],  # route, consumer, operation, request model, response model, provider
            stream,
            estimated,
            status,
            error_type,
            len(attempts),
            finish_reasons,
            params,
        )
        block = blocks.get(key)
        if block is None:
            block = self._block(key, partial(self._request_block, *key))
        parts = [
            _IDS(_TRACE_TAG, high, low, _SPAN_TAG, request_span_id, _FLAGS_LOCAL_PARENT)
            if parent_span_id is None
            else _IDS_PARENT(
                _TRACE_TAG,
                high,
                low,
                _SPAN_TAG,
                request_span_id,
                _PARENT_TAG,
                parent_span_id,
                _FLAGS_REMOTE_PARENT,
            ),
            _TIMES(0x39, start_ns, 0x41, end_perf_ns + offset)
            if first_byte_perf_ns is None
            else _TIMES_EVENT(
                0x39,
                start_ns,
                0x41,
                end_perf_ns + offset,
                _EVENT_HEAD,
                0x09,
                first_byte_perf_ns + offset,
                _EVENT_MIDDLE,
                (first_byte_perf_ns - start_perf_ns) / 1e9,
            ),
            block,
            state,
        ]
        data = request_id.encode()
        size = len(data)
        parts.append(
            _REQUEST_ID.str_heads[size] + data if size < 64 else _REQUEST_ID.str(request_id)
        )
        if response_id:
            data = response_id.encode()
            size = len(data)
            parts.append(
                _RESPONSE_ID.str_heads[size] + data if size < 64 else _RESPONSE_ID.str(response_id)
            )
        if usage is not None:
            _append_usage(parts, usage)
        if cost is not None:
            _append_cost(parts, cost, request_id)
        if content is not None:
            if content[0] is not None:
                parts.append(_INPUT_MESSAGES.str(content[0]))
            if content[1] is not None:
                parts.append(_OUTPUT_MESSAGES.str(content[1]))
        span = b"".join(parts)
        size = len(span)
        out += (heads.get(size) or _span_head(heads, size), span)
        return b"".join(out)

    def export_request(self, chunks: Sequence[bytes]) -> bytes:
        """An ExportTraceServiceRequest holding the spans of ``chunks`` (``request``'s)."""
        scope_size = len(self._scope) + sum(map(len, chunks))
        scope_head = b"\x12" + _varint(scope_size)
        resource_size = len(self._resource) + len(scope_head) + scope_size
        return b"".join(
            [b"\x0a", _varint(resource_size), self._resource, scope_head, self._scope, *chunks]
        )


# -- GenAI metrics, aggregated here ---------------------------------------------------------


class _Histogram:
    """An explicit-bucket histogram (the SDK's semantics: bucket i holds (b[i-1], b[i]]).

    Measurements are appended to ``pending`` (one list append each) and folded into the
    buckets per batch (``fold``), whose loops all run in C (``map``
    of a bisect, ``Counter``, ``sum``, ``min``, ``max``)."""

    __slots__ = ("bounds", "count", "counts", "max", "min", "pending", "search", "sum")

    def __init__(self, bounds: tuple[float, ...], search: tuple[float, ...] = ()) -> None:
        self.bounds = bounds
        # What measurements are bisected against: ``bounds``, or equal values of their type.
        self.search = search or bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.pending: list[float] = []

    def fold(self) -> None:
        pending = self.pending
        taken = len(pending)
        if not taken:
            return
        # Take what is there, leave what comes after (appends may come from another thread).
        values = pending[:taken]
        del pending[:taken]
        counts = self.counts
        for index, number in Counter(map(bisect_left, repeat(self.search), values)).items():
            counts[index] += number
        self.count += len(values)
        self.sum += sum(values)
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high


_METRICS: Final = (
    # name, unit, description, bounds
    ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
     _TOKEN_BUCKETS),
    ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", _DURATION_BUCKETS),
    ("gen_ai.server.time_to_first_token", "s",
     "Time to generate first token for successful responses.", _TTFT_BUCKETS),
    ("gen_ai.server.time_per_output_token", "s",
     "Time per output token generated after the first token for successful responses.",
     _TPOT_BUCKETS),
)  # fmt: skip


class _Series:
    """The histograms of one attribute set: token usage (input, output), duration, time to
    first token, time per output token; ``appends`` are their pending lists' ``append``s
    in that order (what ``add_measures`` calls per measurement)."""

    __slots__ = ("appends", "duration", "input", "output", "tpot", "ttft")

    def __init__(self) -> None:
        self.input = _Histogram(_TOKEN_BUCKETS, _TOKEN_SEARCH)
        self.output = _Histogram(_TOKEN_BUCKETS, _TOKEN_SEARCH)
        self.duration = _Histogram(_DURATION_BUCKETS)
        self.ttft = _Histogram(_TTFT_BUCKETS)
        self.tpot = _Histogram(_TPOT_BUCKETS)
        self.appends = tuple(
            h.pending.append for h in (self.input, self.output, self.duration, self.ttft, self.tpot)
        )

    def fold(self) -> None:
        for histogram in (self.input, self.output, self.duration, self.ttft, self.tpot):
            histogram.fold()


class MetricAggregator:
    """The four gen_ai.* histograms, cumulative since the data plane started, keyed by their
    attribute sets (one tuple and one dict lookup per request; no dict per measurement).

    The exporter process appends the requests' measurements to their series' pending lists
    (``add_measures``, ``add``, ``measure``); ``fold`` (before each export) turns them into
    bucket counts."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        # (operation, provider, request model, response model, route, error type) -> series
        self._series: dict[tuple[str, ...], _Series] = {}

    def series(self, key: tuple[str, ...]) -> tuple[Callable[[float], None], ...]:
        """The pending lists' appends of the series of ``key`` (made on first use)."""
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Series()
        return found.appends

    def add(self, record: Sequence[Any]) -> None:
        """The measurements of one request record (``TracedRequest``'s fields)."""
        status = record[15]
        ok = 200 <= status < 400
        self.measure(
            (
                record[8],
                record[11],
                record[9],
                record[10],
                record[6],
                "" if ok else (record[24] or str(status)),
            ),
            ok=ok,
            start=record[13],
            end=record[14],
            first_byte=record[19],
            usage=record[16],
            stream=record[18],
        )

    def add_measures(self, measures: Iterable[Sequence[Any]]) -> None:
        """Requests' measurements as the data plane ships them (``Measure``'s fields: an
        unsampled request's whole record is these)."""
        series = self._series
        for (
            operation, provider, request_model, response_model, route, error_type, status,
            duration, first_byte, usage, stream,
        ) in measures:  # fmt: skip
            ok = 200 <= status < 400
            key = (
                operation,
                provider,
                request_model,
                response_model,
                route,
                "" if ok else error_type or str(status),
            )
            found = series.get(key)
            appends = self.series(key) if found is None else found.appends
            appends[2](duration / 1e9)
            output = None
            if usage is not None:
                value, output, cached, reasoning, written = usage
                if value is not None:
                    appends[0](value + (cached or 0) + (written or 0))
                if output is not None:
                    output += reasoning or 0
                    appends[1](output)
            if ok and first_byte is not None:
                appends[3](first_byte / 1e9)
                if stream and output is not None and output > 1:
                    appends[4]((duration - first_byte) / 1e9 / (output - 1))

    def measure(
        self,
        key: tuple[str, str, str, str, str, str],
        *,
        ok: bool,
        start: int,
        end: int,
        first_byte: int | None,
        usage: tuple[int | None, ...] | None,
        stream: bool,
    ) -> None:
        """One request's measurements (nanosecond instants) in the series of ``key``:
        (operation, provider, request model, response model, route, error type or "")."""
        found = self._series.get(key)
        appends = self.series(key) if found is None else found.appends
        appends[2]((end - start) / 1e9)
        input_tokens, output = gen_ai_tokens(usage)
        if input_tokens is not None:
            appends[0](input_tokens)
        if output is not None:
            appends[1](output)
        if ok and first_byte is not None:
            appends[3]((first_byte - start) / 1e9)
            if stream and output is not None and output > 1:
                appends[4]((end - first_byte) / 1e9 / (output - 1))

    def fold(self) -> None:
        # A copy: a series may be added meanwhile.
        for series in list(self._series.values()):
            series.fold()

    def metrics_data(self, resource: Resource, version: str) -> Any:
        """Everything so far as the SDK's ``MetricsData`` (what its metric exporters take)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.fold()
        now = time.time_ns()
        metrics = []
        series_items = list(self._series.items())
        for name, unit, description, bounds in _METRICS:
            points = []
            for key, series in series_items:
                attributes: dict[str, str] = {
                    "gen_ai.operation.name": key[0],
                    "gen_ai.provider.name": provider_name(key[1]),
                    "gen_ai.request.model": key[2],
                    "meterline.route": key[4],
                }
                if key[3]:
                    attributes["gen_ai.response.model"] = key[3]
                if key[5]:
                    attributes["error.type"] = key[5]
                if name == "gen_ai.client.token.usage":
                    histograms = [
                        ({**attributes, "gen_ai.token.type": "input"}, series.input),
                        ({**attributes, "gen_ai.token.type": "output"}, series.output),
                    ]
                elif name == "gen_ai.client.operation.duration":
                    histograms = [(attributes, series.duration)]
                elif name == "gen_ai.server.time_to_first_token":
                    histograms = [(attributes, series.ttft)]
                else:
                    histograms = [(attributes, series.tpot)]
                for point_attributes, histogram in histograms:
                    if not histogram.count:
                        continue
                    points.append(
                        HistogramDataPoint(
                            attributes=point_attributes,
                            start_time_unix_nano=self.start_ns,
                            time_unix_nano=now,
                            count=histogram.count,
                            sum=histogram.sum,
                            bucket_counts=list(histogram.counts),
                            explicit_bounds=list(bounds),
                            min=histogram.min,
                            max=histogram.max,
                        )
                    )
            if not points:
                continue
            metrics.append(
                Metric(
                    name=name,
                    description=description,
                    unit=unit,
                    data=Histogram(
                        data_points=points,
                        aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    ),
                )
            )
        if not metrics:
            return None
        scope = InstrumentationScope(SCOPE_NAME, version)
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )


# -- configuration and transports ------------------------------------------------------------


def _protocol(signal: str) -> str:
    """The OTLP protocol of a signal: grpc or http/protobuf (the spec's default)."""
    value = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if value not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r}: only grpc or http/protobuf are supported"
        )
    return value


def check_environment(*, traces: bool, metrics: bool) -> None:
    """Raise ValueError for OTEL_* values the exporter would refuse (an unsupported protocol
    or exporter), before the exporter process starts."""
    for signal, wanted in (("TRACES", traces), ("METRICS", metrics)):
        if wanted and _exporter_kind(signal) == "otlp":
            _protocol(signal)


def otel_resource(default_service_name: str) -> Resource:
    """The SDK's resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, named
    ``default_service_name`` when neither names the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def _exporter_kind(signal: str) -> str:
    """``otlp`` or ``console`` for a signal (OTEL_<SIGNAL>_EXPORTER, default otlp)."""
    kinds = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    kind = kinds.split(",")[0].strip()
    if kind not in ("otlp", "console"):
        raise ValueError(f"OTEL_{signal}_EXPORTER={kinds!r}: only otlp, console or none")
    return kind


SpanSender = Callable[[bytes, int], bool]
_TRACE_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _RawTraceStub:
    """TraceService's Export taking the request's bytes (no parse and re-serialise)."""

    def __init__(self, channel: Any) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        self.Export = channel.unary_unary(
            _TRACE_EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


def span_sender() -> tuple[SpanSender, Callable[[], None]]:
    """(send(ExportTraceServiceRequest bytes, span count) -> ok, close) through the SDK's OTLP
    span exporter the OTEL_* variables name (it reads endpoint, headers, TLS, compression,
    timeout itself and retries as it does for its own spans)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    if _exporter_kind("TRACES") == "console":
        from google.protobuf.json_format import MessageToJson

        def console(payload: bytes, count: int) -> bool:
            sys.stdout.write(MessageToJson(ExportTraceServiceRequest.FromString(payload)) + "\n")
            sys.stdout.flush()
            return True

        return console, lambda: None
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult

        class _Encoded(OTLPSpanExporter):
            """The SDK's gRPC span exporter (channel, headers, TLS, retries, reconnects) sending
            requests that are already encoded: its stub passes bytes through."""

            def __init__(self) -> None:
                super().__init__()
                self._stub = _RawTraceStub  # used again when it reconnects
                if self._channel is not None:
                    self._client = _RawTraceStub(self._channel)

            def _translate_data(self, data: Any) -> Any:
                return data[0]

            def _count_data(self, data: Any) -> int:
                return int(data[1])

        grpc_exporter = _Encoded()

        def send_grpc(payload: bytes, count: int) -> bool:
            result = grpc_exporter._export((payload, count))  # type: ignore[arg-type]
            return bool(result == SpanExportResult.SUCCESS)

        return send_grpc, grpc_exporter.shutdown
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    http_exporter = HttpSpanExporter()

    def send_http(payload: bytes, count: int) -> bool:
        # The exporter's own HTTP client: compression, headers, retries with backoff.
        return bool(http_exporter._client.export(payload).success)

    return send_http, http_exporter.shutdown


def metric_exporter() -> Any:
    if _exporter_kind("METRICS") == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "").strip() or default)
    except ValueError:
        logger.warning("%s is not a number; %s is used", name, default)
        return default
    return value if value > 0 else default


class Exporter:
    """Batches of finished requests -> OTLP spans and GenAI metrics (the exporter process's
    one object; never in the data plane's process but in tests)."""

    def __init__(self, *, traces: bool, metrics: bool) -> None:
        from dataplane import __version__

        self._version = __version__
        self._resource = otel_resource(DEFAULT_SERVICE_NAME)
        self._encoder = SpanEncoder(self._resource, __version__) if traces else None
        self._send_spans: SpanSender | None = None
        self._close_spans: Callable[[], None] = lambda: None
        if traces:
            self._send_spans, self._close_spans = span_sender()
        self._aggregator = MetricAggregator() if metrics else None
        self._metric_exporter = metric_exporter() if metrics else None
        # The batch span processor's variables, with their meaning: spans per export, and
        # the longest a span waits; the metric reader's export interval.
        self._batch_size = int(_env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self._span_delay_s = _env_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._metric_interval_s = _env_number("OTEL_METRIC_EXPORT_INTERVAL", 60_000) / 1000
        # Encoded requests (each its spans) waiting for export, and how many spans each holds.
        self._spans: list[bytes] = []
        self._span_counts: list[int] = []
        self._pending_spans = 0
        self._spans_since = time.monotonic()
        self._metrics_since = time.monotonic()

    @classmethod
    def from_environment(cls) -> Exporter:
        traces, metrics = signals_configured()
        return cls(traces=traces, metrics=metrics)

    @property
    def aggregator(self) -> MetricAggregator | None:
        """Where the GenAI metrics are counted (None when they are not exported)."""
        return self._aggregator

    def add(self, records: Iterable[Sequence[Any]]) -> None:
        """Encode the spans of sampled requests (their metrics were recorded on the request
        path), exporting whenever a batch is full."""
        encoder = self._encoder
        if encoder is None:
            return
        spans, counts = self._spans, self._span_counts
        for record in records:
            try:
                spans.append(encoder.request(record))
                count = 1 + len(record[20])
                counts.append(count)
                self._pending_spans += count
                if self._pending_spans >= self._batch_size:
                    self.export_spans()
                    spans, counts = self._spans, self._span_counts
            except Exception:
                logger.exception("request %s: could not build its spans", record[5])

    def tick(self) -> None:
        """Export what is due: spans older than the schedule delay, metrics each interval."""
        now = time.monotonic()
        if self._aggregator is not None:
            self._aggregator.fold()  # the pending measurements stay few
        if self._spans and now - self._spans_since >= self._span_delay_s:
            self.export_spans()
        if self._aggregator is not None and now - self._metrics_since >= self._metric_interval_s:
            self.export_metrics()

    def export_spans(self) -> None:
        """Send the spans waiting, at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE per request (a
        request's spans stay together)."""
        spans, counts = self._spans, self._span_counts
        self._spans, self._span_counts, self._pending_spans = [], [], 0
        self._spans_since = time.monotonic()
        if self._encoder is None or self._send_spans is None:
            return
        start = 0
        while start < len(spans):
            end, total = start, 0
            while end < len(spans) and (end == start or total + counts[end] <= self._batch_size):
                total += counts[end]
                end += 1
            try:
                self._send_spans(self._encoder.export_request(spans[start:end]), total)
            except Exception:
                logger.exception("could not export %d spans", total)
            start = end

    def export_metrics(self) -> None:
        self._metrics_since = time.monotonic()
        if self._aggregator is None or self._metric_exporter is None:
            return
        data = self._aggregator.metrics_data(self._resource, self._version)  # folds first
        if data is not None:
            try:
                self._metric_exporter.export(data)
            except Exception:
                logger.exception("could not export the GenAI metrics")

    def flush(self) -> None:
        self.export_spans()
        self.export_metrics()

    def shutdown(self) -> None:
        self.flush()
        self._close_spans()
        if self._metric_exporter is not None:
            self._metric_exporter.shutdown()
