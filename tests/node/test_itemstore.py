"""The item store: a flush's states and ``covered`` survive a reopen whole or not at all, a damaged
file or another version's is refused at open, and a refused file can be set aside."""

from __future__ import annotations

import random
import sqlite3
import zlib
from pathlib import Path

import pytest

from node.config import ClusterConfig
from node.durable.itemstore import FILE, FORMAT, DamagedStore, ItemStore
from node.durable.wal import DISCARD_FLAG, Recovery
from node.errors import DataDirError
from node.process.server import open_item_store, open_store
from node.state.item import ItemKey

Pairs = list[tuple[bytes, bytes]]


def opened(directory: Path) -> ItemStore:
    """An item store of ``directory``, open."""
    items = ItemStore(directory)
    items.open()
    return items


async def flush(items: ItemStore, pairs: Pairs, covered: int) -> None:
    """One flush of ``pairs``, committed as covering ``covered``."""
    await items.begin()
    await items.put(pairs)
    await items.commit(covered, len(pairs))


async def many_rows(directory: Path, rows: int = 2000) -> Path:
    """A closed store file of ``rows`` rows, spread over many pages (all checkpointed into it)."""
    items = opened(directory)
    await flush(items, [(b"key-%06d" % i, bytes(100)) for i in range(rows)], 1)
    items.close()
    assert not (directory / f"{FILE}-wal").exists()  # the last close wrote everything into the file
    return directory / FILE


def flip_last_byte(path: Path, key: bytes) -> None:
    """Flip a bit of the last byte of ``key``'s stored state, behind the store's back."""
    db = sqlite3.connect(path)
    with db:
        (stored,) = db.execute("SELECT state FROM items WHERE key = ?", (key,)).fetchone()
        damaged = stored[:-1] + bytes((stored[-1] ^ 1,))
        db.execute("UPDATE items SET state = ? WHERE key = ?", (damaged, key))
    db.close()


def page_size(path: Path) -> int:
    """The SQLite page size of the file at ``path``."""
    db = sqlite3.connect(path)
    try:
        (size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    return int(size)


def test_a_new_store_covers_no_segment_and_holds_nothing(tmp_path: Path) -> None:
    items = ItemStore(tmp_path / "wal")
    assert items.open() == 0
    assert items.covered == 0 and len(items) == 0 and list(items.states()) == []
    assert (tmp_path / "wal" / FILE).exists()  # the directory is made if missing
    items.close()


async def test_a_committed_flush_is_read_back_after_reopening(tmp_path: Path) -> None:
    items = opened(tmp_path)
    await flush(items, [(b"b", b"state-b"), (b"a", b"state-a")], 7)
    assert (items.covered, items.flushes, items.items_written) == (7, 1, 2)
    items.close()
    again = ItemStore(tmp_path)
    assert again.open() == 7
    assert again.covered == 7
    assert list(again.states()) == [(b"a", b"state-a"), (b"b", b"state-b")]  # in key order
    assert len(again) == 2
    again.close()


async def test_a_rolled_back_flush_leaves_nothing_and_keeps_the_old_covered(tmp_path: Path) -> None:
    items = opened(tmp_path)
    await flush(items, [(b"a", b"first")], 3)
    await items.begin()
    await items.put([(b"a", b"second"), (b"b", b"new")])
    await items.rollback()
    await items.rollback()  # nothing in progress: harmless
    assert items.covered == 3 and items.flushes == 1
    assert list(items.states()) == [(b"a", b"first")]
    items.close()
    again = ItemStore(tmp_path)
    assert again.open() == 3
    assert list(again.states()) == [(b"a", b"first")]
    again.close()


async def test_a_later_flush_replaces_a_keys_state(tmp_path: Path) -> None:
    items = opened(tmp_path)
    await flush(items, [(b"a", b"old"), (b"b", b"kept")], 1)
    await flush(items, [(b"a", b"new")], 2)
    assert list(items.states()) == [(b"a", b"new"), (b"b", b"kept")]
    assert len(items) == 2 and items.items_written == 3
    items.close()


async def test_a_flush_is_refused_on_a_closed_store(tmp_path: Path) -> None:
    items = opened(tmp_path)
    items.close()
    with pytest.raises(DataDirError, match="not open"):
        await items.begin()


def test_a_file_of_another_format_is_refused_and_left_untouched(tmp_path: Path) -> None:
    opened(tmp_path).close()
    path = tmp_path / FILE
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (FORMAT + 1,))
    db.close()
    before = path.read_bytes()
    items = ItemStore(tmp_path)
    with pytest.raises(DamagedStore, match=f"format {FORMAT + 1}, not {FORMAT}"):
        items.open()
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(f"{FILE}.damaged-*"))  # not set aside: refused as found
    with pytest.raises(DataDirError, match="not open"):
        len(items)


def test_a_file_of_garbage_is_refused(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(DamagedStore, match=FILE):
        ItemStore(tmp_path).open()


async def test_a_damaged_page_is_found_by_the_check_at_open(tmp_path: Path) -> None:
    path = await many_rows(tmp_path)
    size = page_size(path)
    pages = path.stat().st_size // size
    assert pages > 10
    middle = (pages // 2 - 1) * size + size // 2  # the middle of a leaf page, far from page 1
    data = bytearray(path.read_bytes())
    data[middle - 64 : middle + 64] = b"\xff" * 128  # cell headers among the bytes: sizes go wrong
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedStore, match=r"(?s): damaged \(.* of page "):  # ``quick_check``'s verdict
        ItemStore(tmp_path).open()


async def test_a_page_overwritten_whole_is_refused(tmp_path: Path) -> None:
    path = await many_rows(tmp_path)
    size = page_size(path)
    page = path.stat().st_size // size - 1  # a late page: one of the table's
    data = bytearray(path.read_bytes())
    data[page * size : (page + 1) * size] = random.Random(2).randbytes(size)
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedStore):
        ItemStore(tmp_path).open()


async def test_a_set_aside_file_is_renamed_with_its_sqlite_log_and_the_next_open_starts_empty(
    tmp_path: Path,
) -> None:
    garbage = random.Random(3).randbytes(4096)
    (tmp_path / FILE).write_bytes(garbage)
    (tmp_path / f"{FILE}-wal").write_bytes(b"wal")  # left by a crash beside it
    (tmp_path / f"{FILE}-shm").write_bytes(b"shm")
    items = ItemStore(tmp_path)
    aside = items.set_aside()
    assert aside.startswith(f"{FILE}.damaged-")
    assert (tmp_path / aside).read_bytes() == garbage
    assert (tmp_path / f"{aside}-wal").read_bytes() == b"wal"
    assert (tmp_path / f"{aside}-shm").read_bytes() == b"shm"
    assert not any((tmp_path / f"{FILE}{suffix}").exists() for suffix in ("", "-wal", "-shm"))
    assert items.open() == 0
    assert list(items.states()) == []
    await flush(items, [(b"a", b"state")], 1)  # a working store again
    second = items.set_aside()  # an open store is closed first; a name is never reused
    assert second != aside and (tmp_path / second).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [aside, f"{aside}-wal", f"{aside}-shm", second]
    )


async def test_a_store_refused_at_open_can_be_set_aside(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(random.Random(5).randbytes(4096))
    items = ItemStore(tmp_path)
    with pytest.raises(DamagedStore):
        items.open()
    aside = items.set_aside()
    assert not (tmp_path / FILE).exists() and (tmp_path / aside).stat().st_size == 4096
    assert items.open() == 0 and len(items) == 0
    items.close()


def test_a_damaged_store_stops_a_start_unless_the_operator_discards_it(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(random.Random(4).randbytes(4096))
    items = ItemStore(tmp_path)
    with pytest.raises(DataDirError, match=DISCARD_FLAG) as refused:
        open_item_store(items, discard_damaged=False)
    assert not isinstance(refused.value, DamagedStore)
    assert (tmp_path / FILE).exists()
    discarded = open_item_store(items, discard_damaged=True)
    assert discarded is not None and "discarded, kept aside as items.db.damaged-" in discarded
    assert items.covered == 0 and len(items) == 0
    items.close()
    assert open_item_store(ItemStore(tmp_path), discard_damaged=False) is None


async def test_the_size_on_disk_grows_with_writes(tmp_path: Path) -> None:
    items = opened(tmp_path)
    empty = items.size_bytes()
    await flush(items, [(b"key-%06d" % i, bytes(200)) for i in range(500)], 1)
    assert items.size_bytes() > empty + 500 * 200
    items.close()
    assert ItemStore(tmp_path / "nowhere").size_bytes() == 0


async def test_a_state_damaged_in_the_file_fails_its_checksum_unless_discarded(tmp_path: Path) -> None:
    items = opened(tmp_path)
    await flush(items, [(b"a", b"state-a"), (b"b", b"state-b")], 1)
    items.close()
    flip_last_byte(tmp_path / FILE, b"a")
    items = opened(tmp_path)  # SQLite's structure is intact: ``quick_check`` passes
    with pytest.raises(DamagedStore, match="item b'a' fails its checksum"):
        list(items.states())
    assert list(items.states(discard_damaged=True)) == [(b"b", b"state-b")]
    assert items.damaged == [b"a"]
    items.drop_damaged()
    assert list(items.states()) == [(b"b", b"state-b")] and items.damaged == []
    items.close()


async def test_a_start_over_a_damaged_state_stops_unless_the_operator_discards_it(tmp_path: Path) -> None:
    key = ItemKey("post", 1).to_bytes()
    items = opened(tmp_path)
    await flush(items, [(key, b"state")], 1)  # any state: a damaged one is never decoded
    items.close()
    flip_last_byte(tmp_path / FILE, key)
    items = opened(tmp_path)
    with pytest.raises(DataDirError, match=DISCARD_FLAG):
        open_store(ClusterConfig(nodes=()), "n1-0123456789abcdef.1", items, Recovery())
    recovery = Recovery()
    store, _ = open_store(
        ClusterConfig(nodes=()), "n1-0123456789abcdef.1", items, recovery, discard_damaged=True
    )
    assert len(store) == 0 and len(items) == 0  # dropped from the item store as well
    assert recovery.snapshot_discarded and not recovery.clean
    assert recovery.damage == [f"{FILE}: 1 damaged item states discarded"]
    items.close()


async def test_a_state_turned_to_text_by_one_flipped_bit_reads_back_whole(tmp_path: Path) -> None:
    state = next(
        b"s%d" % n
        for n in range(1000)
        if zlib.crc32(b"s%d" % n, zlib.crc32(b"a")).to_bytes(4, "big").isascii()
    )  # so the flipped state's bytes are valid UTF-8 and SQLite hands back a str
    items = opened(tmp_path)
    await flush(items, [(b"a", state), (b"b", b"fine")], 1)
    items.close()
    path = tmp_path / FILE
    data = bytearray(path.read_bytes())
    header = bytes((3, 12 + 2 * 1, 12 + 2 * (4 + len(state)))) + b"a"  # record header: two BLOBs, then key
    at = data.find(header)
    assert at > 0
    data[at + 2] ^= 1  # the state's serial type: BLOB (even) becomes TEXT (odd), the same length
    path.write_bytes(bytes(data))
    items = opened(tmp_path)
    # Only the type changed, not a byte of the state: it is read as bytes and its checksum holds.
    assert list(items.states()) == [(b"a", state), (b"b", b"fine")]
    items.close()
