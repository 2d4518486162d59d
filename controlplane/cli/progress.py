"""Progress on stderr for commands that take a while, only when stderr is a terminal.

A pipe or a file gets nothing (scripts and logs stay clean); a terminal gets one line
rewritten in place (``\\r``) and ended when the work is done, so stdout keeps only data.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """One status line, rewritten in place."""

    def __init__(self, label: str, *, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._label = label
        self.enabled = self._stream.isatty()
        self._width = 0
        self._lock = threading.Lock()

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{self._label}: {text}"
        with self._lock:
            pad = " " * max(0, self._width - len(line))
            self._stream.write(f"\r{line}{pad}")
            self._stream.flush()
            self._width = len(line)

    def done(self) -> None:
        """Clear the line: the command's own result follows on stdout."""
        if not self.enabled or not self._width:
            return
        with self._lock:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


@contextmanager
def elapsed(label: str, *, stream: TextIO | None = None, every: float = 0.2) -> Iterator[Progress]:
    """Show ``label: 3.4 s`` while the block runs (one long call with no counts to report)."""
    progress = Progress(label, stream=stream)
    if not progress.enabled:
        yield progress
        return
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while True:
            progress.update(f"{time.monotonic() - start:.1f} s")
            if stop.wait(every):
                return

    thread = threading.Thread(target=tick, name="progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        progress.done()
