"""AWS's binary event-stream framing (``application/vnd.amazon.eventstream``), split and checked.

A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), the
headers, the payload and a CRC32 of everything before it. ``EventStreamSplitter`` cuts a byte
stream into whole frames, unchanged (both CRCs checked), so a native client receives exactly
what the provider sent; ``decode_frame`` parses a frame's headers with botocore's own decoder
(the parser every AWS SDK for Python uses, checking the CRCs again), and ``encode_frame``
builds frames (the fakes, and translated streams a Bedrock client reads).
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
    """Cuts a byte stream into whole frames (raw bytes), checking their lengths and CRCs.

    A bad frame ends the stream: ``feed`` returns the good frames before it, and the next
    ``feed`` or ``flush`` raises EventStreamCorrupt, so a relay sends what was good first.
    """

    __slots__ = ("_buffer", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: EventStreamCorrupt | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames completed by ``chunk`` (see the class for a corrupt one)."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += chunk
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= _PRELUDE_LENGTH:
            total = int.from_bytes(buffer[start : start + 4], "big")
            if total < _MIN_FRAME or total > _MAX_FRAME:
                self._error = EventStreamCorrupt(f"event-stream frame of impossible length {total}")
                break
            if len(buffer) - start < total:
                break
            frame = bytes(buffer[start : start + total])
            if not _crcs_match(frame):
                self._error = EventStreamCorrupt("event-stream frame with a bad CRC")
                break
            frames.append(frame)
            start += total
        if start:
            del buffer[:start]
        if self._error is not None and not frames:
            raise self._error
        return frames

    def flush(self) -> bytes:
        """After the stream's end: nothing (an incomplete frame cannot be relayed); raises the
        pending EventStreamCorrupt if the last chunk held a bad frame."""
        self._buffer.clear()
        if self._error is not None:
            raise self._error
        return b""


def _crcs_match(frame: bytes) -> bool:
    prelude_crc = int.from_bytes(frame[8:12], "big")
    message_crc = int.from_bytes(frame[-4:], "big")
    return crc32(frame[:8]) == prelude_crc and crc32(frame[:-4]) == message_crc


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
