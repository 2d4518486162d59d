"""The reporter frames batches around serialized events: the bytes must be UsageBatch's own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataplane.usage.reporter import encode_batch
from meterline.dataplane.v1 import usage_pb2

_EVENTS = st.lists(
    st.builds(
        usage_pb2.UsageEvent,
        id=st.text(max_size=300),
        subject=st.text(max_size=40),
        llm_tokens=st.builds(
            usage_pb2.LlmTokens,
            model=st.text(max_size=200),
            tokens=st.integers(min_value=0, max_value=2**63 - 1),
        ),
    ),
    max_size=40,
)


@given(batch_id=st.text(max_size=200), events=_EVENTS)
def test_encoded_batch_is_the_serialized_message(
    batch_id: str, events: list[usage_pb2.UsageEvent]
) -> None:
    data = encode_batch(batch_id, [event.SerializeToString() for event in events])
    expected = usage_pb2.UsageBatch(batch_id=batch_id, events=events)
    assert data == expected.SerializeToString()
    assert usage_pb2.UsageBatch.FromString(data) == expected


def test_long_events_get_multi_byte_lengths() -> None:
    event = usage_pb2.UsageEvent(id="x" * 20_000)
    data = encode_batch("b", [event.SerializeToString()] * 3)
    assert usage_pb2.UsageBatch.FromString(data).events == [event] * 3
