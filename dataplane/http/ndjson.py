"""Incremental splitting of a newline-delimited JSON stream (Ollama's) into whole lines."""

from __future__ import annotations

NDJSON_CONTENT_TYPE = "application/x-ndjson"


class NdjsonSplitter:
    """Cuts arbitrary network chunks into complete lines, each with its trailing newline.

    Same interface as ``SseSplitter``: lines are returned byte-for-byte as received.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk`` and return the lines it completed (possibly none)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n")
        if end == -1:
            self._pending = data
            return []
        self._pending = data[end + 1 :]
        return [line + b"\n" for line in data[:end].split(b"\n")]

    def flush(self) -> bytes:
        """Return what is left after the stream ended (an unterminated line, or b"")."""
        rest, self._pending = self._pending, b""
        return rest
