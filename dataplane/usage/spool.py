"""The usage spool: a write-ahead log of usage events not yet acknowledged by the control plane.

Layout: a directory (0700) of segment files ``seg-<16 digits>.wal`` (0600), written in order.
Each record is ``<u32 length><u32 crc32><UsageEvent bytes>`` (little-endian). Only the newest
segment is appended to; it is sealed when it reaches ``segment_bytes`` or as soon as every
event in it is acknowledged, and a sealed segment is deleted once the control plane has ACKed
every event in it. A restarted data plane reads every segment back and resends its events (the
control plane deduplicates by event id, so events acked just before a crash are stored once).

Durability, and what each failure can lose:

- Every append is one ``write(2)`` straight to the kernel (no user-space buffer), so a killed
  process (``kill -9``, OOM) loses nothing that was appended.
- ``fsync=interval`` (the default) calls ``fdatasync`` from a background thread every
  ``fsync_interval`` seconds (default 0.1 s): a machine crash or power loss can lose at most
  the events appended in the last interval plus one fdatasync (documented as 100 ms of usage
  at the default). The request path never waits for the disk.
- ``fsync=always`` calls ``fdatasync`` after every append: nothing is lost even on power loss,
  at the price of one disk flush per event on the request path.
- A record torn by a crash (a short tail) is cut off at restart and logged.

A directory is used by one process at a time (an exclusive ``flock`` on ``lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dataplane.errors import DataPlaneError
from dataplane.statedir import ensure_private_dir

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT_GLOB = "seg-*.wal"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FSYNC_INTERVAL_S = 0.1
# Records longer than this are corruption, not events (an event is ~150 bytes).
_MAX_RECORD = 1024 * 1024


class FsyncPolicy(StrEnum):
    """When appended usage reaches the disk itself (not only the kernel's page cache)."""

    ALWAYS = "always"
    INTERVAL = "interval"


class FullPolicy(StrEnum):
    """What the data plane does when the spool holds ``max_bytes``.

    BLOCK: new requests get a 503 until the control plane acknowledges usage (requests
    already in flight still spool theirs, so the bound is exceeded by at most their events).
    SERVE: keep serving; new usage is kept in memory only (lost if the process dies), counted
    in ``unspooled_events`` and reported in an ERROR log line.
    """

    BLOCK = "block"
    SERVE = "serve"


class SpoolLocked(DataPlaneError):
    """Another process uses the spool directory."""


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    events: int = 0
    acked: int = 0
    fd: int | None = None
    sealed: bool = False
    dirty: bool = False


@dataclass(frozen=True)
class SpooledEvent:
    """An event read back from the spool at start: its segment and its serialized bytes."""

    segment: int
    data: bytes


class Spool:
    """Appends serialized usage events to segment files and deletes them once acknowledged."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int | None = None,
        fsync: FsyncPolicy = FsyncPolicy.INTERVAL,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL_S,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # Several segments under the bound, so acked ones are deleted while the bound nears.
        self.segment_bytes = segment_bytes or max(64 * 1024, min(4 << 20, max_bytes // 8))
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._next_seq = 1
        self._bytes = 0
        self._pending_close: list[int] = []
        self._lock_fd: int | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.recovered: list[SpooledEvent] = []

    # -- opening ------------------------------------------------------------------------------

    def open(self) -> list[SpooledEvent]:
        """Lock the directory and read back every spooled event (oldest first)."""
        ensure_private_dir(self.directory)
        lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolLocked(
                f"the usage spool {self.directory} is in use by another data plane"
            ) from None
        self._lock_fd = lock_fd
        recovered: list[SpooledEvent] = []
        for path in sorted(self.directory.glob(_SEGMENT_GLOB)):
            try:
                seq = int(path.stem.removeprefix("seg-"))
            except ValueError:
                continue
            records, size = _read_segment(path)
            self._next_seq = max(self._next_seq, seq + 1)
            if not records:
                path.unlink()
                continue
            self._segments[seq] = _Segment(
                seq=seq, path=path, size=size, events=len(records), sealed=True
            )
            self._bytes += size
            recovered.extend(SpooledEvent(seq, data) for data in records)
        if recovered:
            logger.warning(
                "usage spool %s: %d unacknowledged events from a previous run will be resent",
                self.directory,
                len(recovered),
            )
        self.recovered = recovered
        return recovered

    def start(self) -> None:
        """Start the periodic fsync (interval policy)."""
        if self.fsync is FsyncPolicy.INTERVAL and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="usage-spool-fsync")

    async def close(self) -> None:
        """Sync and close every file; unacknowledged events stay on disk for the next start."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        fds = [s.fd for s in self._segments.values() if s.fd is not None]
        fds.extend(self._pending_close)
        self._pending_close = []
        for segment in self._segments.values():
            segment.fd = None
        self._active = None
        await asyncio.to_thread(_sync_and_close, fds, fds)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the hot path -------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """True once the spool holds ``max_bytes`` or more."""
        return self._bytes >= self.max_bytes

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in live segments (acked events of a live segment included)."""
        return self._bytes

    def append(self, data: bytes) -> int:
        """Write one serialized event; return the segment that holds it."""
        segment = self._active
        if segment is None:
            segment = self._new_segment()
        frame = _HEADER.pack(len(data), zlib.crc32(data)) + data
        assert segment.fd is not None
        view = memoryview(frame)
        while view:
            written = os.write(segment.fd, view)
            view = view[written:]
        segment.size += len(frame)
        segment.events += 1
        self._bytes += len(frame)
        if self.fsync is FsyncPolicy.ALWAYS:
            os.fdatasync(segment.fd)
        else:
            segment.dirty = True
        if segment.size >= self.segment_bytes:
            self._seal(segment)
        return segment.seq

    def ack(self, counts: Mapping[int, int]) -> None:
        """Count acknowledged events per segment; delete segments acknowledged in full."""
        for seq, count in counts.items():
            segment = self._segments.get(seq)
            if segment is None:
                continue
            segment.acked += count
            if segment.acked >= segment.events:
                # A fully acked active segment is sealed too: an idle spool ends up empty.
                self._seal(segment)
                self._delete(segment)

    # -- internals ----------------------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"seg-{seq:016d}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        segment = _Segment(seq=seq, path=path, fd=fd)
        self._segments[seq] = segment
        self._active = segment
        if self.fsync is FsyncPolicy.ALWAYS:
            _fsync_dir(self.directory)
        return segment

    def _seal(self, segment: _Segment) -> None:
        if segment is self._active:
            self._active = None
        segment.sealed = True
        if segment.fd is not None:
            if self.fsync is FsyncPolicy.ALWAYS:
                os.close(segment.fd)
            else:
                # Closed by the flusher after its last fdatasync, never under its feet.
                self._pending_close.append(segment.fd)
            segment.fd = None

    def _delete(self, segment: _Segment) -> None:
        self._segments.pop(segment.seq, None)
        self._bytes -= segment.size
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()

    async def sync(self) -> None:
        """fdatasync what was appended since the last sync (and close sealed segments)."""
        to_sync = []
        for segment in self._segments.values():
            if segment.dirty and segment.fd is not None:
                to_sync.append(segment.fd)
                segment.dirty = False
        to_close, self._pending_close = self._pending_close, []
        if to_sync or to_close:
            # Sealed segments' last bytes are synced before their file is closed.
            await asyncio.to_thread(_sync_and_close, to_sync + to_close, to_close)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval)
            try:
                await self.sync()
            except OSError as exc:  # a failing disk is an alert, not a reason to stop serving
                logger.error("usage spool fsync failed: %s", exc)


def _sync_and_close(sync_fds: list[int], close_fds: list[int]) -> None:
    for fd in sync_fds:
        with contextlib.suppress(OSError):
            os.fdatasync(fd)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_segment(path: Path) -> tuple[list[bytes], int]:
    """Return the records of a segment and its valid size; cut a torn or corrupt tail."""
    data = path.read_bytes()
    records: list[bytes] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if length > _MAX_RECORD or end > len(data):
            break
        record = data[offset + _HEADER.size : end]
        if zlib.crc32(record) != crc:
            break
        records.append(record)
        offset = end
    if offset != len(data):
        logger.warning(
            "usage spool %s: cut %d bytes of a torn or corrupt tail", path, len(data) - offset
        )
        with path.open("r+b") as out:
            out.truncate(offset)
    return records, offset
