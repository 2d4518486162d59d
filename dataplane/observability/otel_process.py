"""The data plane's OpenTelemetry exporter process, and the data plane's handle on it.

When OTEL_* variables ask for traces or metrics, ``tracing.Tracing`` starts one child process
(``python -m dataplane.observability.otel_process DATA_FD ACK_FD``) and its drains (on the
data plane's event loop) write it, every drain interval, batches of plain values (``marshal``:
ints, strs, bytes, tuples): the GenAI measurements of the requests that were not sampled
(``Measure``'s fields) and the records of the sampled ones (``TracedRequest``'s fields, beside
each the response as the client got it, a body's bytes or a stream's first and last outputs,
and the cost as a decimal string). The
child does everything else, on another core: the response id and finish reasons, the OTLP
span bytes (``SpanEncoder``), the histograms (``MetricAggregator``) and the exports through the
SDK's OTLP exporters, which read the OTEL_* variables (endpoint, protocol, headers, TLS,
resource) from the environment it inherits.

The wire: each message is a little-endian u32 length and the ``marshal`` bytes of a tuple,
``(BATCH, measures, records)`` or ``(FLUSH, sequence)``; the child answers a FLUSH, once
everything before it is exported, with the sequence as a little-endian u64 on the ack pipe.

The child dies with its parent: the data pipe's end-of-file (the parent exited, whatever the
way) makes it export what it holds and exit. The parent never blocks on it from the request
path: its drains write without blocking, keeps at most ``MAX_BUFFERED_BYTES`` unwritten
(beyond that batches are dropped and counted in ``dropped``), and restarts a child that died
(a few times; then tracing degrades to dropping, and says so once in the log).
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

BATCH: Final = 0
FLUSH: Final = 1
_HEAD: Final = struct.Struct("<I")
_ACK: Final = struct.Struct("<Q")
# Unwritten bytes the data plane keeps while the child is slow (or restarting).
MAX_BUFFERED_BYTES: Final = 32 * 1024 * 1024
# Restarts of a child that died before tracing gives up (then everything is dropped).
MAX_RESTARTS: Final = 5
# How often the child looks at its clocks (span schedule delay, metric interval).
_TICK_S: Final = 0.2
_READ_SIZE: Final = 1 << 20
# The data pipe's capacity asked for (Linux: F_SETPIPE_SZ; an unprivileged process gets up to
# /proc/sys/fs/pipe-max-size, 1 MiB by default): a default pipe holds 64 KiB, a few hundred
# sampled requests.
PIPE_SIZE: Final = 1 << 20
_F_SETPIPE_SZ: Final = 1031
_SOURCE_ROOT: Final = str(Path(__file__).resolve().parent.parent.parent)


def frame(message: tuple[Any, ...]) -> bytes:
    """One message on the wire (length-prefixed ``marshal`` bytes)."""
    payload = marshal.dumps(message)
    return _HEAD.pack(len(payload)) + payload


class ExporterProcess:
    """The data plane's side: start the child, queue framed batches for it, flush, stop.

    Used by ``Tracing``'s drains and its ``force_flush``/``shutdown``, under its
    lock; never from the request path."""

    def __init__(self, *, max_buffered: int = MAX_BUFFERED_BYTES) -> None:
        self._max_buffered = max_buffered
        # Framed messages not written yet, with how many requests each carries.
        self._outbox: deque[tuple[memoryview, int]] = deque()
        self._buffered = 0
        self._sequence = 0
        self._acks = b""
        self.dropped = 0  # requests dropped (child too slow, dead, or gone for good)
        self.restarts = 0
        self.failed = False
        self.closed = False
        self._warned_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_fd = self._ack_fd = -1
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _start(self) -> None:
        data_read, data_write = os.pipe()
        ack_read, ack_write = os.pipe()
        env = dict(os.environ)
        # The child imports this very source tree (a checkout run in place, or installed).
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = _SOURCE_ROOT + (os.pathsep + path if path else "")
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dataplane.observability.otel_process",
                    str(data_read),
                    str(ack_write),
                ],
                pass_fds=(data_read, ack_write),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            for fd in (data_write, ack_read):
                os.close(fd)
            raise
        finally:
            os.close(data_read)
            os.close(ack_write)
        os.set_blocking(data_write, False)
        _enlarge(data_write)
        self._data_fd, self._ack_fd = data_write, ack_read
        self._acks = b""

    # -- the drains ---------------------------------------------------------------------

    def send(self, payload: bytes, requests: int) -> None:
        """Queue one framed message and write what the pipe takes now (never blocks)."""
        if self.failed or self.closed:
            self.dropped += requests
            return
        if self._buffered + len(payload) > self._max_buffered:
            self.dropped += requests
            self._warn(f"the OpenTelemetry exporter process is behind: {self.dropped} "
                       "requests dropped so far")  # fmt: skip
            return
        self._outbox.append((memoryview(payload), requests))
        self._buffered += len(payload)
        self.pump()

    def pump(self) -> bool:
        """Write what the pipe takes now; True once nothing is left to write. Notices (and
        restarts) a child that died."""
        if self.closed:
            return True
        outbox = self._outbox
        while outbox:
            chunk, requests = outbox[0]
            try:
                written = os.write(self._data_fd, chunk)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the child is gone
                self._died()
                return not self._outbox
            self._buffered -= written
            if written < len(chunk):
                outbox[0] = (chunk[written:], requests)
            else:
                outbox.popleft()
        else:
            if self._proc is not None and self._proc.poll() is not None:
                self._died()
            return True
        if self._proc is not None and self._proc.poll() is not None:
            self._died()
        return not self._outbox

    @property
    def pending(self) -> bool:
        """Whether framed messages wait for the pipe to take them."""
        return bool(self._outbox) and not self.closed

    def _died(self) -> None:
        proc = self._proc
        code = None if proc is None else proc.poll()
        lost = sum(requests for _, requests in self._outbox)
        self.dropped += lost
        self._outbox.clear()
        self._buffered = 0
        self._close_fds()
        if proc is not None and code is None:
            proc.kill()
            proc.wait()
        if self.restarts >= MAX_RESTARTS:
            self.failed = True
            self._proc = None
            logger.error(
                "the OpenTelemetry exporter process exited (%s) %d times: spans and GenAI "
                "metrics are no longer exported",
                code,
                self.restarts + 1,
            )
            return
        self.restarts += 1
        logger.error(
            "the OpenTelemetry exporter process exited (%s); %d requests' spans and metrics "
            "lost; starting it again",
            code,
            lost,
        )
        try:
            self._start()
        except OSError:
            logger.exception("could not start the OpenTelemetry exporter process")
            self.failed = True
            self._proc = None

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            logger.warning(message)

    # -- flush and stop (blocking, with deadlines) -------------------------------------

    def _write_all(self, deadline: float) -> bool:
        while not self.pump():
            left = deadline - time.monotonic()
            if left <= 0 or self._proc is None:
                return False
            select.select([], [self._data_fd], [], min(left, 0.5))
        return self._proc is not None

    def flush(self, timeout: float = 30.0) -> bool:
        """Everything queued so far exported by the child (True), or the deadline passed."""
        if self.failed or self.closed or self._proc is None:
            return False
        deadline = time.monotonic() + timeout
        self._sequence += 1
        sequence = self._sequence
        message = frame((FLUSH, sequence))
        self._outbox.append((memoryview(message), 0))
        self._buffered += len(message)
        proc = self._proc
        if not self._write_all(deadline) or proc is not self._proc:
            return False
        while True:
            while len(self._acks) >= _ACK.size:
                (acked,) = _ACK.unpack_from(self._acks)
                self._acks = self._acks[_ACK.size :]
                if acked >= sequence:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("the OpenTelemetry exporter process did not flush in %ss", timeout)
                return False
            ready, _, _ = select.select([self._ack_fd], [], [], left)
            if ready:
                data = os.read(self._ack_fd, 4096)
                if not data:
                    self._died()
                    return False
                self._acks += data

    def close(self, timeout: float = 10.0) -> None:
        """Write what is left, then end of file: the child exports everything and exits.
        Whatever comes after is dropped (counted), never a new child."""
        proc = self._proc
        if proc is None or self.closed:
            self.closed = True
            return
        deadline = time.monotonic() + timeout
        self._write_all(deadline)
        self.closed = True
        proc = self._proc
        self._close_fds()
        self._proc = None
        if proc is None:
            return
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning("the OpenTelemetry exporter process did not stop: killed")
            proc.kill()
            proc.wait()

    def _close_fds(self) -> None:
        for fd in (self._data_fd, self._ack_fd):
            if fd >= 0:
                os.close(fd)
        self._data_fd = self._ack_fd = -1


def _enlarge(fd: int) -> None:
    """Ask for a ``PIPE_SIZE`` pipe (Linux); the default capacity otherwise."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or above pipe-max-size: the default size, written more often


# -- the child ---------------------------------------------------------------------------------


def completed(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The records of a batch's (record, response, cost) items, the two in their places
    (``TracedRequest``'s ``response_id`` and ``cost``): the data plane ships them beside the
    record, which it builds on the request path before they are known."""
    return [(*record[:22], response, *record[23:26], cost) for record, response, cost in items]


def handle(message: tuple[Any, ...], aggregator: Any) -> list[tuple[Any, ...]]:
    """A BATCH message: its measurements and records counted by ``aggregator`` (None: metrics
    not exported); the records, for the span encoder."""
    _, measures, items = message
    records = completed(items)
    try:
        if aggregator is not None:
            aggregator.add_measures(measures)
            for record in records:
                aggregator.add(record)
    except Exception:
        logger.exception("could not record the GenAI metrics of a batch")
    return records


def serve(data_fd: int, ack_fd: int, exporter: Any = None) -> None:
    """The child's loop: read batches until end of file, export on the OTEL_* schedule and on
    each FLUSH (acked), then export everything and return."""
    if exporter is None:
        from dataplane.observability.otel_export import Exporter

        exporter = Exporter.from_environment()
    aggregator = exporter.aggregator
    buffer = bytearray()
    loads, unpack_from, head = marshal.loads, _HEAD.unpack_from, _HEAD.size
    ticked = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([data_fd], [], [], _TICK_S)
            if ready:
                chunk = os.read(data_fd, _READ_SIZE)
                if not chunk:
                    break
                buffer += chunk
                offset, size = 0, len(buffer)
                while size - offset >= head:
                    (length,) = unpack_from(buffer, offset)
                    end = offset + head + length
                    if end > size:
                        break
                    message = loads(bytes(buffer[offset + head : end]))
                    offset = end
                    if message[0] == BATCH:
                        exporter.add(handle(message, aggregator))
                    else:
                        exporter.flush()
                        os.write(ack_fd, _ACK.pack(message[1]))
                del buffer[:offset]
            now = time.monotonic()
            if now - ticked >= _TICK_S:
                ticked = now
                exporter.tick()
    finally:
        exporter.shutdown()


def main(argv: list[str]) -> int:
    # A terminal's Ctrl-C reaches the whole process group: the data plane decides when this
    # process ends (end of file on its pipe), after it exported what it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s meterline-otel-exporter %(name)s: %(message)s",
    )
    data_fd, ack_fd = int(argv[1]), int(argv[2])
    try:
        serve(data_fd, ack_fd)
    except Exception:
        logger.exception("the OpenTelemetry exporter process failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
