"""AWS's binary event-stream framing (``application/vnd.amazon.eventstream``), split and checked.

A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), the
headers, the payload and a CRC32 of everything before it. ``EventStreamSplitter`` cuts a byte
stream into whole frames, unchanged, so a native client receives exactly what the provider
sent; ``decode_frame`` checks both CRCs and parses the headers with botocore's own decoder (the
parser every AWS SDK for Python uses), and ``encode_frame`` builds frames (the fakes, and
translated streams a Bedrock client reads).
"""

from __future__ import annotations

import struct
from binascii import crc32
from dataclasses import dataclass
from typing import Final

from dataplane.errors import DataPlaneError

CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"
_PRELUDE: Final = struct.Struct(">III")
_PRELUDE_LENGTH: Final = 12
_MIN_FRAME: Final = _PRELUDE_LENGTH + 4
# botocore refuses larger frames too (16 MiB payloads, 128 KiB headers).
_MAX_FRAME: Final = 16 * 1024**2 + 128 * 1024 + _MIN_FRAME
_STRING_HEADER: Final = 7


class EventStreamCorrupt(DataPlaneError):
    """A frame whose length or CRC does not check out: the stream cannot be trusted further."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded event-stream message."""

    headers: dict[str, object]
    payload: bytes

    @property
    def event_type(self) -> str:
        """``:event-type`` of an event, ``:exception-type`` of an exception, else ''."""
        for name in (":event-type", ":exception-type"):
            value = self.headers.get(name)
            if isinstance(value, str):
                return value
        return ""

    @property
    def message_type(self) -> str:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else ""


class EventStreamSplitter:
    """Cuts a byte stream into whole frames (raw bytes), checking only their lengths."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames completed by ``chunk``; raises EventStreamCorrupt on a bad length."""
        buffer = self._buffer
        buffer += chunk
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= _PRELUDE_LENGTH:
            total = int.from_bytes(buffer[start : start + 4], "big")
            if total < _MIN_FRAME or total > _MAX_FRAME:
                raise EventStreamCorrupt(f"event-stream frame of impossible length {total}")
            if len(buffer) - start < total:
                break
            frames.append(bytes(buffer[start : start + total]))
            start += total
        if start:
            del buffer[:start]
        return frames

    def flush(self) -> bytes:
        """After the stream's end: nothing (an incomplete frame cannot be relayed), and the
        held-back bytes are dropped."""
        self._buffer.clear()
        return b""


def decode_frame(frame: bytes) -> Frame:
    """The headers and payload of one whole frame; EventStreamCorrupt if a CRC is wrong."""
    # Imported here: only data planes that meet an event stream load botocore.
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    try:
        message = next(buffer)
    except (ParserError, StopIteration) as exc:
        raise EventStreamCorrupt(f"bad event-stream frame: {type(exc).__name__}") from None
    return Frame(headers=dict(message.headers), payload=bytes(message.payload))


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string ``headers`` (the only header type Bedrock's events use)."""
    encoded = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name)]) + raw_name + bytes([_STRING_HEADER])
        encoded += len(raw_value).to_bytes(2, "big") + raw_value
    total = _PRELUDE_LENGTH + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + crc32(prelude).to_bytes(4, "big")
    body = head + bytes(encoded) + payload
    return body + crc32(body).to_bytes(4, "big")


def event(event_type: str, payload: bytes) -> bytes:
    """A Bedrock event frame (``:message-type`` event, JSON payload)."""
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """A Bedrock in-stream exception frame (``:message-type`` exception)."""
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )
