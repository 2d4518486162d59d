"""Incremental splitting of a server-sent-events byte stream into whole events."""

from __future__ import annotations

_SEPARATORS = (b"\n\n", b"\r\n\r\n")


class SseSplitter:
    """Cuts arbitrary network chunks into complete events, each with its trailing blank line.

    Events are yielded byte-for-byte as received, so relaying them changes nothing.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk`` and return the events it completed (possibly none)."""
        data = self._pending + chunk if self._pending else chunk
        events: list[bytes] = []
        start = 0
        while True:
            end = -1
            sep_len = 0
            for sep in _SEPARATORS:
                index = data.find(sep, start)
                if index != -1 and (end == -1 or index < end):
                    end, sep_len = index, len(sep)
            if end == -1:
                break
            events.append(data[start : end + sep_len])
            start = end + sep_len
        self._pending = data[start:]
        return events

    def flush(self) -> bytes:
        """Return what is left after the stream ended (an unterminated event, or b"")."""
        rest, self._pending = self._pending, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """Return the joined ``data:`` lines of one event, or None if it has none."""
    parts: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)
