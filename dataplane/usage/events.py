"""Building the usage events of one proxied LLM request."""

from __future__ import annotations

from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from dataplane.usage.tokens import TokenUsage
from meterline.dataplane.v1 import usage_pb2

LLM_TOKENS_EVENT_TYPE: Final = "llm.tokens"


def llm_token_events(
    *,
    request_id: str,
    source: str,
    subject: str,
    time_ns: int,
    provider: str,
    model: str,
    status_code: int,
    route: str,
    usage: TokenUsage | None,
    estimated: bool,
    time_to_first_token_ms: int | None = None,
    latency_ms: int = 0,
    attempt: int = 1,
    failed_attempt: bool = False,
) -> list[usage_pb2.UsageEvent]:
    """Return the events of a request, one per token kind (ids ``<request_id>:<kind>``).

    Input and output events are always there (a count the provider did not report is recorded
    as 0); cached_input, reasoning and cache_write events only when their count is above zero.
    A failed attempt that was retried elsewhere gets ids ``<request_id>.<attempt>:<kind>``, so
    it never collides with the answer's events.
    """
    id_prefix = f"{request_id}.{attempt}" if failed_attempt else request_id
    # Fields set directly: Timestamp.FromNanoseconds is pure Python and shows in profiles.
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    time = Timestamp(seconds=seconds, nanos=nanos)
    counts: list[tuple[str, int, int]] = [
        ("input", usage_pb2.TOKEN_TYPE_INPUT, (usage.input_tokens if usage else None) or 0),
        ("output", usage_pb2.TOKEN_TYPE_OUTPUT, (usage.output_tokens if usage else None) or 0),
    ]
    if usage is not None:
        for suffix, token_type, tokens in (
            ("cached_input", usage_pb2.TOKEN_TYPE_CACHED_INPUT, usage.cached_input_tokens),
            ("reasoning", usage_pb2.TOKEN_TYPE_REASONING, usage.reasoning_tokens),
            ("cache_write", usage_pb2.TOKEN_TYPE_CACHE_WRITE, usage.cache_write_tokens),
        ):
            if tokens:
                counts.append((suffix, token_type, tokens))
    return [
        usage_pb2.UsageEvent(
            id=f"{id_prefix}:{suffix}",
            source=source,
            type=LLM_TOKENS_EVENT_TYPE,
            subject=subject,
            time=time,
            llm_tokens=usage_pb2.LlmTokens(
                provider=provider,
                model=model,
                token_type=token_type,  # type: ignore[arg-type]
                tokens=tokens,
                status_code=status_code,
                route=route,
                request_id=request_id,
                estimated=estimated,
                time_to_first_token_ms=time_to_first_token_ms,
                latency_ms=latency_ms,
                attempt=attempt,
            ),
        )
        for suffix, token_type, tokens in counts
    ]
