"""The write-ahead log: records survive reopening, damage is cut exactly, group commit shares fsyncs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from node.wal import DURABLE_MARK, WriteAheadLog, encode_record, read_records

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


async def test_a_snapshot_replaces_the_segments_it_covers(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.open()
    wal.start()
    await wal.append([(b"a", b"old")])
    covered = await wal.rotate()
    await wal.append([(b"b", b"after")])
    await asyncio.to_thread(wal.install_snapshot, covered, iter([[(b"a", b"state")]]))
    await wal.close()
    assert len(list(tmp_path.glob("wal-*.log"))) == 1
    _, snapshot, deltas, damage = reopen(tmp_path)
    assert snapshot == [(b"a", b"state")]
    assert deltas == [(b"b", b"after")]
    assert damage == []


async def test_the_durable_mark_names_the_last_fsynced_offset(tmp_path: Path) -> None:
    await write(tmp_path, [[(b"a", b"1")]], mark_durable=True)
    name, offset = (tmp_path / DURABLE_MARK).read_text().split()
    assert (tmp_path / name).stat().st_size == int(offset)


records = st.lists(
    st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=40)), min_size=1, max_size=3),
    max_size=12,
)


@given(records, st.data())
def test_a_log_cut_anywhere_reads_back_as_a_prefix_of_its_records(
    written: list[Pairs], data: st.DataObject
) -> None:
    log = b"".join(encode_record(pairs) for pairs in written)
    cut = data.draw(st.integers(0, len(log)))
    read, good = read_records(log[:cut])
    assert read == written[: len(read)]
    assert good <= cut
    assert len(read) == len(written) or good < len(log)


@given(records, st.binary(min_size=1, max_size=64))
def test_garbage_after_a_log_never_reads_as_records(written: list[Pairs], garbage: bytes) -> None:
    log = b"".join(encode_record(pairs) for pairs in written)
    read, good = read_records(log + garbage)
    assert read[: len(written)] == written
    assert good >= len(log)
