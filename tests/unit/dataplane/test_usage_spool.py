"""The usage spool: append, read back after a crash, delete only what was acknowledged."""

from __future__ import annotations

import os
import stat

import pytest

from dataplane.usage.spool import FsyncPolicy, Spool, SpoolLocked


def crash(spool: Spool) -> None:
    """Forget ``spool`` the way kill -9 would: no sync, no close, only the lock released."""
    assert spool._lock_fd is not None
    os.close(spool._lock_fd)
    spool._lock_fd = None


def segments(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("seg-*.wal"))


@pytest.mark.parametrize("fsync", list(FsyncPolicy), ids=str)
def test_appended_events_survive_a_crash_in_order(tmp_path, fsync) -> None:
    spool = Spool(tmp_path, fsync=fsync, segment_bytes=100)
    assert spool.open() == []
    records = [f"event-{i}".encode() * 3 for i in range(10)]
    held_in = [spool.append(r) for r in records]
    assert len(set(held_in)) > 1  # rotated at 100 bytes
    crash(spool)

    again = Spool(tmp_path)
    recovered = again.open()
    assert [e.data for e in recovered] == records
    assert [e.segment for e in recovered] == held_in
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    for name in segments(tmp_path):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_only_fully_acknowledged_segments_are_deleted(tmp_path) -> None:
    spool = Spool(tmp_path, segment_bytes=50)
    spool.open()
    first = [spool.append(b"x" * 30) for _ in range(2)]  # 2 x 38 bytes: seals segment 1
    second = spool.append(b"y" * 10)
    assert first == [1, 1] and second == 2
    spool.ack({1: 1})
    assert segments(tmp_path) == ["seg-0000000000000001.wal", "seg-0000000000000002.wal"]
    spool.ack({1: 1})
    assert segments(tmp_path) == ["seg-0000000000000002.wal"]
    # The active segment, once fully acked, is sealed and deleted too: an idle spool is empty.
    spool.ack({2: 1})
    assert segments(tmp_path) == []
    assert spool.size_bytes == 0
    # The next append opens a new segment.
    assert spool.append(b"z") == 3


def test_recovered_events_are_released_by_their_acks(tmp_path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    for i in range(3):
        spool.append(b"e%d" % i)
    crash(spool)
    again = Spool(tmp_path)
    recovered = again.open()
    new_segment = again.append(b"new")
    assert new_segment != recovered[0].segment  # old segments are never appended to
    again.ack({recovered[0].segment: 3})
    assert segments(tmp_path) == [f"seg-{new_segment:016d}.wal"]


def test_a_torn_tail_is_cut_and_the_rest_is_kept(tmp_path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(b"complete-1")
    spool.append(b"complete-2")
    crash(spool)
    (path,) = tmp_path.glob("seg-*.wal")
    with path.open("ab") as out:
        out.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")  # a record cut by the crash
    recovered = Spool(tmp_path).open()
    assert [e.data for e in recovered] == [b"complete-1", b"complete-2"]
    assert path.stat().st_size == 2 * (8 + 10)


def test_a_corrupt_record_ends_the_segment(tmp_path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(b"good")
    spool.append(b"flipped")
    crash(spool)
    (path,) = tmp_path.glob("seg-*.wal")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [e.data for e in Spool(tmp_path).open()] == [b"good"]


def test_full_at_max_bytes(tmp_path) -> None:
    spool = Spool(tmp_path, max_bytes=40)
    spool.open()
    spool.append(b"a" * 20)
    assert not spool.full
    segment = spool.append(b"b" * 20)
    assert spool.full and spool.size_bytes == 56
    spool.ack({segment: 2})
    assert not spool.full


def test_one_process_per_directory(tmp_path) -> None:
    Spool(tmp_path).open()
    with pytest.raises(SpoolLocked, match="in use"):
        Spool(tmp_path).open()


async def test_interval_fsync_syncs_and_close_keeps_unacked_events(tmp_path) -> None:
    spool = Spool(tmp_path, fsync_interval=0.01, segment_bytes=30)
    spool.open()
    spool.start()
    spool.append(b"a" * 20)
    spool.append(b"b" * 20)  # seals the first segment: the flusher closes it
    await spool.sync()
    assert spool._pending_close == []
    await spool.close()
    assert [e.data for e in Spool(tmp_path).open()] == [b"a" * 20, b"b" * 20]
