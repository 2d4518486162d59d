"""Building the usage events of one proxied LLM request."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from dataplane.openai_format import TokenUsage
from meterline.dataplane.v1 import usage_pb2

LLM_TOKENS_EVENT_TYPE = "llm.tokens"


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
) -> tuple[usage_pb2.UsageEvent, usage_pb2.UsageEvent]:
    """Return the input and output events of a request (ids ``<request_id>:input|output``).

    A count the provider did not report is recorded as 0.
    """
    time = Timestamp()
    time.FromNanoseconds(time_ns)
    counts = (
        ("input", usage_pb2.TOKEN_TYPE_INPUT, usage.input_tokens if usage else None),
        ("output", usage_pb2.TOKEN_TYPE_OUTPUT, usage.output_tokens if usage else None),
    )
    input_event, output_event = (
        usage_pb2.UsageEvent(
            id=f"{request_id}:{suffix}",
            source=source,
            type=LLM_TOKENS_EVENT_TYPE,
            subject=subject,
            time=time,
            llm_tokens=usage_pb2.LlmTokens(
                provider=provider,
                model=model,
                token_type=token_type,
                tokens=tokens or 0,
                status_code=status_code,
                route=route,
                request_id=request_id,
                estimated=estimated,
            ),
        )
        for suffix, token_type, tokens in counts
    )
    return input_event, output_event
