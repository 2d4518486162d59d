"""Incremental splitting of a server-sent-events byte stream into whole events."""

from __future__ import annotations


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
        # Each separator is searched once and again only after it is consumed: searching
        # both from every event start rescanned the whole chunk per event (quadratic).
        lf = data.find(b"\n\n")
        # find, not bytes ``in`` (which first tries its operand as an int: ~1k instructions).
        crlf = data.find(b"\r\n\r\n") if data.find(b"\r") != -1 else -1
        while lf != -1 or crlf != -1:
            end = crlf + 4 if crlf != -1 and (lf == -1 or crlf < lf) else lf + 2
            events.append(data[start:end])
            start = end
            if lf != -1 and lf < start:
                lf = data.find(b"\n\n", start)
            if crlf != -1 and crlf < start:
                crlf = data.find(b"\r\n\r\n", start)
        self._pending = data[start:] if start else data
        return events

    def flush(self) -> bytes:
        """Return what is left after the stream ended (an unterminated event, or b"")."""
        rest, self._pending = self._pending, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """Return the joined ``data:`` lines of one event, or None if it has none."""
    if event.startswith(b"data:") and event.find(b"\r") == -1:
        # The common shape, one data line ("data: {...}\n\n"), without splitting lines, and
        # sliced once: this runs on every event of every stream.
        newline = event.find(b"\n")
        tail = len(event) - newline
        if newline == -1 or tail == 1 or (tail == 2 and event.endswith(b"\n")):
            start = 6 if event.startswith(b" ", 5) else 5
            return event[start:newline] if newline != -1 else event[start:]
    parts: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)
