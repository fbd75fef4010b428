"""The write-ahead log: records survive reopening, damage costs only the records it touches (a torn
tail is cut exactly), old formats are still read, group commit shares fsyncs."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.durable.logframe import (
    LEGACY_SNAPSHOT_MAGIC,
    LOG_MAGIC,
    SNAPSHOT_MAGIC,
    Scan,
    encode_record,
    read_segment,
    read_snapshot,
    scan_records,
    snapshot_header,
)
from node.durable.wal import DISCARD_FLAG, DURABLE_MARK, SNAPSHOT, WriteAheadLog
from node.errors import DataDirError

Pairs = list[tuple[bytes, bytes]]


def reopen(directory: Path) -> tuple[WriteAheadLog, Pairs, Pairs, list[str]]:
    wal = WriteAheadLog(directory)
    recovery = wal.open()
    return wal, recovery.snapshot, recovery.deltas, recovery.damage


async def write(directory: Path, records: list[Pairs], **options: object) -> WriteAheadLog:
    wal = WriteAheadLog(directory, **options)  # type: ignore[arg-type]
    wal.open()
    wal.start()
    await asyncio.gather(*(wal.append(pairs) for pairs in records))
    await wal.close()
    return wal


async def test_acknowledged_records_are_read_back_in_order(tmp_path: Path) -> None:
    records = [[(b"k%d" % i, b"d%d" % i)] for i in range(50)]
    await write(tmp_path, records)
    _, snapshot, deltas, damage = reopen(tmp_path)
    assert snapshot == [] and damage == []
    assert deltas == [pair for pairs in records for pair in pairs]


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    wal = await write(tmp_path, [[(b"k", b"%d" % i)] for i in range(200)])
    assert wal.records == 200
    assert 1 <= wal.fsyncs < 200  # everything waiting when an fsync starts shares it


async def test_fsync_never_writes_without_syncing(tmp_path: Path) -> None:
    wal = await write(tmp_path, [[(b"k", b"v")]], fsync="never")
    assert wal.fsyncs == 0
    assert reopen(tmp_path)[2] == [(b"k", b"v")]


async def test_a_torn_tail_is_cut_at_the_last_good_record_and_reported(tmp_path: Path) -> None:
    await write(tmp_path, [[(b"a", b"1")], [(b"b", b"2")]])
    (segment,) = tmp_path.glob("wal-*.log")
    good_size = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x00\x10garbage after a crash")
    wal, _, deltas, damage = reopen(tmp_path)
    assert deltas == [(b"a", b"1"), (b"b", b"2")]
    assert len(damage) == 1 and "damaged bytes" in damage[0]
    assert segment.stat().st_size == good_size  # cut, so the damage is reported once
    await wal.close()
    assert reopen(tmp_path)[3] == []


async def test_a_damaged_record_loses_only_its_own_segments_tail(tmp_path: Path) -> None:
    await write(tmp_path, [[(b"a", b"1")], [(b"b", b"2")]])
    await write(tmp_path, [[(b"c", b"3")]])  # a second run: a second segment
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last record of the first segment
    first.write_bytes(bytes(data))
    _, _, deltas, damage = reopen(tmp_path)
    assert deltas == [(b"a", b"1"), (b"c", b"3")]  # deltas are joins: later ones still apply
    assert len(damage) == 1


async def test_a_flush_drops_the_segments_it_covers_and_a_start_skips_them(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 0, [[(b"z", b"state")]])  # a previous version's: the flush holds it now
    wal = WriteAheadLog(tmp_path)
    wal.open()
    wal.start()
    await wal.append([(b"a", b"old")])
    covered = await wal.rotate()
    await wal.append([(b"b", b"after")])
    await asyncio.to_thread(wal.drop_segments, covered)
    await wal.close()
    assert len(list(tmp_path.glob("wal-*.log"))) == 1 and not (tmp_path / SNAPSHOT).exists()
    wal = WriteAheadLog(tmp_path)
    recovery = wal.open(covered)
    assert recovery.snapshot == [] and recovery.deltas == [(b"b", b"after")] and recovery.damage == []
    (tmp_path / f"wal-{covered:012d}.log").write_bytes(LOG_MAGIC + encode_record([(b"a", b"old")]))
    again = WriteAheadLog(tmp_path).open(covered)  # a flush that died before dropping its segments
    assert again.deltas == [(b"b", b"after")] and not (tmp_path / f"wal-{covered:012d}.log").exists()


async def test_the_durable_mark_names_the_last_fsynced_offset(tmp_path: Path) -> None:
    await write(tmp_path, [[(b"a", b"1")]], mark_durable=True)
    name, offset = (tmp_path / DURABLE_MARK).read_text().split()
    assert (tmp_path / name).stat().st_size == int(offset)


record = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=40)), min_size=1, max_size=3)
records = st.lists(record, max_size=12)


def segment_of(written: list[Pairs]) -> tuple[bytes, list[tuple[int, int]]]:
    """A segment file holding ``written``, and where each record starts and ends in it."""
    spans, offset = [], len(LOG_MAGIC)
    for pairs in written:
        size = len(encode_record(pairs))
        spans.append((offset, offset + size))
        offset += size
    return LOG_MAGIC + b"".join(encode_record(pairs) for pairs in written), spans


def accounted(scan: Scan, header: int) -> int:
    """Bytes of a scan's records and damaged spans: every byte after the header is one or the other."""
    return header + sum(len(encode_record(r)) for r in scan.records) + sum(d.length for d in scan.damage)


def is_subsequence(part: list[Pairs], whole: list[Pairs]) -> bool:
    rest = iter(whole)
    return all(any(x == y for y in rest) for x in part)


@given(records, st.data())
def test_a_log_cut_anywhere_reads_back_as_a_prefix_of_its_records(
    written: list[Pairs], data: st.DataObject
) -> None:
    log, spans = segment_of(written)
    cut = data.draw(st.integers(0, len(log)))
    scan = read_segment(log[:cut])
    assert scan.records == written[: len(scan.records)]
    # Where the whole part ends: after the last whole record, or the file header (a torn one is cut).
    good = spans[len(scan.records) - 1][1] if scan.records else len(LOG_MAGIC) * (cut >= len(LOG_MAGIC))
    if good == cut:
        assert scan.damage == []
    else:  # a torn last write: one damaged span, the tail, from the end of the last whole record
        assert scan.damage == [scan.tail] and scan.tail is not None and scan.tail.offset == good
        assert sum(scan.tail) == cut


@given(records, st.binary(min_size=1, max_size=64))
def test_garbage_after_a_log_never_reads_as_records(written: list[Pairs], garbage: bytes) -> None:
    log, _ = segment_of(written)
    scan = read_segment(log + garbage)
    assert scan.records == written
    assert scan.damage == [(len(log), len(garbage))] and scan.tail == (len(log), len(garbage))


@given(st.lists(record, min_size=1, max_size=12), st.data())
def test_damage_in_the_middle_loses_only_the_records_it_touches(
    written: list[Pairs], data: st.DataObject
) -> None:
    log, spans = segment_of(written)
    at = data.draw(st.integers(len(LOG_MAGIC), len(log) - 1), label="at")
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="kind")
    if kind == "flip":
        masks = data.draw(st.binary(min_size=1, max_size=16), label="masks")[: len(log) - at]
        damaged = bytearray(log)
        for i, mask in enumerate(masks):
            damaged[at + i] ^= mask or 0xFF
        hit = flips = (at, at + len(masks))
    elif kind == "cut":
        length = data.draw(st.integers(1, min(64, len(log) - at)), label="length")
        damaged = bytearray(log[:at] + log[at + length :])
        hit, flips = (at, at + length), (at, at)
    else:
        garbage = data.draw(st.binary(min_size=1, max_size=64), label="garbage")
        damaged = bytearray(log[:at] + garbage + log[at:])
        hit = flips = (at, at)

    def touched(start: int, end: int) -> bool:
        return start < hit[1] and hit[0] < end if hit[0] < hit[1] else start < hit[0] < end

    intact = [pairs for pairs, span in zip(written, spans, strict=True) if not touched(*span)]
    scan = read_segment(bytes(damaged))
    # Every record the damage did not touch, in order; nothing that was never written (a cut may
    # join two equal records' halves into that record again).
    assert is_subsequence(intact, scan.records) and is_subsequence(scan.records, written)
    # Every byte is in a record read or a damaged span (so inserted garbage is all reported) ...
    assert accounted(scan, len(LOG_MAGIC)) == len(damaged)
    # ... and every flipped byte is in a damaged span. (Where inserted bytes repeat their neighbours,
    # which ones are "the garbage" is ambiguous; their count is not.)
    assert all(any(d.offset <= i < d.offset + d.length for d in scan.damage) for i in range(*flips))


async def test_eight_bytes_flipped_mid_log_lose_only_the_records_they_touch(tmp_path: Path) -> None:
    records = [[(b"post/%d" % i, b"like %d" % i)] for i in range(2_000)]
    await write(tmp_path, records)
    (segment,) = tmp_path.glob("wal-*.log")
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    segment.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path)
    recovery = wal.open()
    lost = [pairs[0] for pairs in records if pairs[0] not in recovery.deltas]
    assert 1 <= len(lost) <= 2  # 8 bytes overlap one record or two
    assert recovery.records == len(records) - len(lost)
    (line,) = recovery.damage
    assert line.startswith(f"{segment.name}: skipped ") and "damaged bytes at offset" in line
    assert not recovery.clean
    assert segment.stat().st_size == len(data)  # damage in the middle is kept, not cut
    await wal.close()


def test_a_damaged_segment_header_costs_no_record(tmp_path: Path) -> None:
    log, _ = segment_of([[(b"a", b"1")], [(b"b", b"2")]])
    scan = read_segment(b"LIKESLOX" + log[8:])
    assert scan.records == [[(b"a", b"1")], [(b"b", b"2")]]
    assert scan.damage == [(0, len(LOG_MAGIC))]


def test_a_segment_starts_with_its_format_version(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.open()
    (segment,) = tmp_path.glob("wal-*.log")
    assert segment.read_bytes() == LOG_MAGIC


# -- the previous format: a node upgraded over an old data directory --------------------------------


def legacy_record(pairs: Pairs) -> bytes:
    """A record as the previous format wrote it: ``length u32, crc32 u32, payload``, no marker."""
    payload = msgpack.packb([list(pair) for pair in pairs], use_bin_type=True)
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


async def test_an_old_format_log_is_replayed_and_new_records_follow_it(tmp_path: Path) -> None:
    old = [[(b"a", b"1")], [(b"b", b"2"), (b"c", b"3")]]
    segment = tmp_path / "wal-000000000001.log"
    # As the old node left it at a crash: whole records, then half of one.
    segment.write_bytes(b"".join(legacy_record(pairs) for pairs in old) + legacy_record(old[0])[:7])
    await write(tmp_path, [[(b"d", b"4")]])
    assert segment.read_bytes() == b"".join(legacy_record(pairs) for pairs in old)  # the tail was cut
    _, snapshot, deltas, damage = reopen(tmp_path)
    assert snapshot == [] and damage == []
    assert deltas == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")]


async def test_an_old_format_snapshot_is_read(tmp_path: Path) -> None:
    head = LEGACY_SNAPSHOT_MAGIC + (1).to_bytes(8, "big")
    (tmp_path / SNAPSHOT).write_bytes(head + legacy_record([(b"a", b"state")]))
    (tmp_path / "wal-000000000001.log").write_bytes(legacy_record([(b"a", b"covered")]))
    (tmp_path / "wal-000000000002.log").write_bytes(legacy_record([(b"b", b"after")]))
    wal, snapshot, deltas, damage = reopen(tmp_path)
    assert snapshot == [(b"a", b"state")] and deltas == [(b"b", b"after")] and damage == []
    assert not (tmp_path / "wal-000000000001.log").exists()  # covered by the snapshot
    await wal.close()


# -- the previous version's snapshot, and a damaged one ------------------------------------------


def write_snapshot(directory: Path, covered: int, chunks: list[Pairs]) -> None:
    """A snapshot file as the previous version wrote it (before the item store replaced it)."""
    data = snapshot_header(covered) + b"".join(encode_record(chunk) for chunk in chunks)
    (directory / SNAPSHOT).write_bytes(data)


async def test_the_previous_versions_snapshot_is_read_and_the_segments_it_covers_skipped(
    tmp_path: Path,
) -> None:
    (tmp_path / "wal-000000000001.log").write_bytes(LOG_MAGIC + encode_record([(b"a", b"covered")]))
    write_snapshot(tmp_path, 1, [[(b"a", b"state")]])
    (tmp_path / "wal-000000000002.log").write_bytes(LOG_MAGIC + encode_record([(b"b", b"after")]))
    _, snapshot, deltas, damage = reopen(tmp_path)
    assert snapshot == [(b"a", b"state")] and deltas == [(b"b", b"after")] and damage == []
    assert (tmp_path / SNAPSHOT).read_bytes().startswith(SNAPSHOT_MAGIC)  # until a flush holds it


def snapshot_with_log_after(directory: Path) -> bytes:
    """A snapshot holding (a, state) covering segment 1, and segment 2 holding (b, after)."""
    write_snapshot(directory, 1, [[(b"a", b"state")], [(b"c", b"state")]])
    (directory / "wal-000000000002.log").write_bytes(LOG_MAGIC + encode_record([(b"b", b"after")]))
    return (directory / SNAPSHOT).read_bytes()


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


DAMAGE = {
    "a record's payload": lambda d: flipped(d, len(d) - 1),
    "a record's header": lambda d: flipped(d, 25),
    "the covered segment": lambda d: flipped(d, 16),  # caught by the snapshot header's own CRC
    "the magic": lambda d: flipped(d, 0),
    "a cut": lambda d: d[:-3],
    "too short": lambda d: d[:12],
    "an old-format record": lambda d: LEGACY_SNAPSHOT_MAGIC + bytes(8) + legacy_record([(b"a", b"s")])[:-1],
}


@pytest.mark.parametrize("where", DAMAGE)
def test_a_damaged_snapshot_stops_the_log_opening_and_names_the_flag(tmp_path: Path, where: str) -> None:
    damaged = DAMAGE[where](snapshot_with_log_after(tmp_path))
    (tmp_path / SNAPSHOT).write_bytes(damaged)
    with pytest.raises(DataDirError, match=DISCARD_FLAG):
        WriteAheadLog(tmp_path).open()
    assert (tmp_path / SNAPSHOT).read_bytes() == damaged  # left exactly as found


async def test_with_the_flag_a_damaged_snapshot_is_set_aside_and_the_log_after_it_replayed(
    tmp_path: Path,
) -> None:
    damaged = flipped(snapshot_with_log_after(tmp_path), 30)
    (tmp_path / SNAPSHOT).write_bytes(damaged)
    wal = WriteAheadLog(tmp_path)
    recovery = wal.open(discard_damaged_snapshot=True)
    assert recovery.snapshot_discarded and not recovery.clean
    assert recovery.snapshot == [] and recovery.deltas == [(b"b", b"after")]
    (line,) = recovery.damage
    assert line.startswith(f"{SNAPSHOT}: damaged snapshot") and "discarded" in line
    (aside,) = tmp_path.glob(f"{SNAPSHOT}.damaged-*")
    assert aside.read_bytes() == damaged and not (tmp_path / SNAPSHOT).exists()
    await wal.close()
    wal = WriteAheadLog(tmp_path)  # never read again: a start without the flag works
    again = wal.open()
    assert again.clean and not again.snapshot_discarded and again.deltas == [(b"b", b"after")]
    await wal.close()


def test_the_snapshot_format_reads_back_what_it_was_given(tmp_path: Path) -> None:
    data = snapshot_with_log_after(tmp_path)
    assert read_snapshot(data) == (1, [[(b"a", b"state")], [(b"c", b"state")]])
    assert scan_records(data, len(data)).records == []


async def test_a_recovery_is_clean_only_when_nothing_was_cut_skipped_or_discarded(tmp_path: Path) -> None:
    await write(tmp_path, [[(b"a", b"1")]])
    wal = WriteAheadLog(tmp_path)
    assert wal.open().clean
    await wal.close()
    (segment,) = sorted(tmp_path.glob("wal-*.log"))[:1]
    with open(segment, "ab") as handle:
        handle.write(b"a torn write")
    wal = WriteAheadLog(tmp_path)
    assert not wal.open().clean  # the torn tail was cut
    await wal.close()
    wal = WriteAheadLog(tmp_path)
    assert wal.open().clean  # and reported once
    await wal.close()
