"""Flushes to the item store: a flush writes what changed since the last one and drops the log it
covers, a failed one loses nothing, and a restart gives back the store whole (item store, a previous
version's snapshot, then the log's tail)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdt import ORSet
from node.config import ClusterConfig
from node.durable import durability as durability_module
from node.durable.durability import Durability
from node.durable.itemstore import ItemStore
from node.durable.logframe import LOG_MAGIC, encode_record, snapshot_header
from node.durable.wal import SNAPSHOT, Recovery, WriteAheadLog
from node.errors import DataDirError
from node.process.server import open_item_store, open_store, resumes_writer
from node.state.item import Item, ItemKey, encode_item
from node.state.store import LikeStore
from tests.node.conftest import SoloCluster, solo_durability

WRITER = "n1-0123456789abcdef.1"
#: The writer of the previous version's snapshot (another actor).
OLD_WRITER = "n1-fedcba9876543210.1"


def write_snapshot(directory: Path, covered: int, chunks: list[list[tuple[bytes, bytes]]]) -> None:
    """A snapshot file as the previous version wrote it (as ``tests.node.test_wal`` does)."""
    data = snapshot_header(covered) + b"".join(encode_record(chunk) for chunk in chunks)
    (directory / SNAPSHOT).write_bytes(data)


def start(directory: Path) -> tuple[Durability, Recovery]:
    """A node's durability over the log directory ``directory``, opened as ``run_node`` opens it and
    started in the running event loop; and what the start found on disk."""
    items = ItemStore(directory)
    assert open_item_store(items, discard_damaged=False) is None
    wal = WriteAheadLog(directory)
    recovery = wal.open(items.covered)
    store, _ = open_store(ClusterConfig(nodes=()), WRITER, items, recovery)
    durability = solo_durability(store, wal, items, SoloCluster())
    durability.start()
    return durability, recovery


def post(number: int) -> ItemKey:
    """The item ``post:number``."""
    return ItemKey("post", number)


async def like(durability: Durability, number: int, *users: int) -> None:
    """``users`` like ``post:number``, made durable (and applied) as a request does."""
    for user in users:
        assert durability.store.like(post(number), user).changed
    await durability.commit(durability.level(None))


def segments(directory: Path) -> list[str]:
    """The names of the log segments in ``directory``, in order."""
    return sorted(path.name for path in directory.glob("wal-*.log"))


def held(items: ItemStore) -> dict[bytes, bytes]:
    """Every state in the item store, by key, in the general form (the store keeps a one-like item
    in its own)."""
    reader = LikeStore("reader-0123456789abcdef.1")
    assert reader.restore_stored(items.states()) == 0
    return states(reader)


def states(store: LikeStore) -> dict[bytes, bytes]:
    """Every state in the in-memory store, by key."""
    found: dict[bytes, bytes] = {}
    for raw in store.item_keys():
        state = store.state(raw)
        assert state is not None
        found[raw] = state
    return found


def counts(store: LikeStore, numbers: range) -> dict[int, int]:
    """The like counts of posts ``numbers``."""
    return {number: store.count(post(number)) for number in numbers}


def liked_by(users: range) -> Item:
    """An item liked by ``users``, under ``OLD_WRITER``'s dots."""
    likers = ORSet()
    for user in users:
        likers.add(OLD_WRITER, user)
    return Item(likers)


async def test_a_flush_stores_exactly_the_changed_items_and_drops_the_segments_it_covers(
    tmp_path: Path,
) -> None:
    durability, recovery = start(tmp_path)
    assert recovery.records == 0 and durability.items.covered == 0
    assert not resumes_writer(recovery, durability.wal, durability.items.covered)  # nothing held yet
    for number in range(1, 6):
        await like(durability, number, number, 100 + number)
    assert segments(tmp_path) == ["wal-000000000001.log"]
    assert await durability.flush() == 5
    assert durability.items.covered == 1
    assert held(durability.items) == states(durability.store)
    assert set(held(durability.items)) == {post(n).to_bytes() for n in range(1, 6)}
    assert segments(tmp_path) == ["wal-000000000002.log"]  # the covered one is gone
    assert len(durability.store.unflushed) == 0
    await durability.close()


async def test_a_second_flush_writes_only_the_item_changed_since_the_first(tmp_path: Path) -> None:
    durability, _ = start(tmp_path)
    items = durability.items
    for number in range(1, 6):
        await like(durability, number, number)
    assert await durability.flush() == 5
    first = held(items)
    await like(durability, 3, 999)
    assert await durability.flush() == 1
    assert (items.flushes, items.items_written, items.covered) == (2, 6, 2)
    second = held(items)
    assert {raw for raw, state in second.items() if first.get(raw) != state} == {post(3).to_bytes()}
    assert second == states(durability.store)
    assert segments(tmp_path) == ["wal-000000000003.log"]
    assert await durability.flush() == 0  # nothing changed: the log is still covered, nothing written
    # Nothing was logged since: the log is not rotated, the store still covers segment 2.
    assert (items.flushes, items.items_written, items.covered) == (3, 6, 2)
    await durability.close()


async def test_a_peers_change_is_not_logged_but_reaches_the_item_store_at_the_flush(
    tmp_path: Path,
) -> None:
    durability, _ = start(tmp_path)
    durability.store.merge(post(1).to_bytes(), encode_item(liked_by(range(1, 4))))
    assert durability.wal.records == 0
    assert await durability.flush() == 1
    assert held(durability.items) == states(durability.store)
    await durability.close()
    again, recovery = start(tmp_path)
    assert recovery.records == 0 and again.store.count(post(1)) == 3
    await again.close()


async def test_a_restart_gives_back_the_item_store_and_the_log_written_after_the_last_flush(
    tmp_path: Path,
) -> None:
    durability, _ = start(tmp_path)
    for number in range(1, 5):
        await like(durability, number, number, 100 + number)
    durability.store.add_to_counter(post(1), "views", 5)
    await durability.commit(durability.level(None))
    await durability.flush()
    await like(durability, 1, 500)  # from here on, only in the log
    await like(durability, 9, 1, 2)
    assert durability.store.unlike(post(2), 2).changed
    await durability.commit(durability.level(None))
    store = durability.store
    fingerprint, liked, counters = store.fingerprint(), counts(store, range(1, 10)), store.counters(post(1))
    await durability.close(flush=False)  # as a crash would leave it

    again, recovery = start(tmp_path)
    assert recovery.records == 3 and recovery.snapshot == [] and recovery.clean
    assert resumes_writer(recovery, again.wal, again.items.covered)
    assert again.items.covered == 1 and len(again.items) == 4
    assert again.store.fingerprint() == fingerprint
    assert counts(again.store, range(1, 10)) == liked and liked[1] == 3 and liked[2] == 1 and liked[9] == 2
    assert again.store.counters(post(1)) == counters == {"views": 5}
    assert len(again.store.unflushed) == 3  # the log's tail (posts 1, 2, 9): the next flush writes it
    assert await again.flush() == 3
    assert held(again.items) == states(again.store)
    await again.close()

    third, recovery = start(tmp_path)
    assert recovery.records == 0 and third.store.fingerprint() == fingerprint
    await third.close()


async def test_likes_logged_while_flushes_run_are_kept_by_the_item_store_or_the_log(
    tmp_path: Path,
) -> None:
    durability, _ = start(tmp_path)
    writes = [asyncio.create_task(like(durability, user % 7, user)) for user in range(300)]
    flushes = [asyncio.create_task(durability.flush()) for _ in range(3)]
    await asyncio.gather(*writes, *flushes)
    await like(durability, 1, 1000)
    fingerprint = durability.store.fingerprint()
    assert durability.store.likes == 301
    await durability.close(flush=False)
    again, _ = start(tmp_path)
    assert again.store.fingerprint() == fingerprint and again.store.likes == 301
    await again.close()


async def test_a_failed_flush_gives_its_keys_back_deletes_no_segment_and_the_next_one_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durability_module, "FLUSH_SLICE", 2)  # five items: three slices
    durability, _ = start(tmp_path)
    for number in range(1, 6):
        await like(durability, number, number)
    put = ItemStore.put
    slices: list[int] = []

    async def second_slice_fails(self: ItemStore, pairs: list[tuple[bytes, bytes]]) -> None:
        slices.append(len(pairs))
        if len(slices) == 2:
            raise DataDirError("disk full")
        await put(self, pairs)

    monkeypatch.setattr(ItemStore, "put", second_slice_fails)
    logged = segments(tmp_path)
    with pytest.raises(DataDirError, match="disk full"):
        await durability.flush()
    assert slices == [2, 2]
    assert len(durability.store.unflushed) == 5
    assert set(logged) < set(segments(tmp_path))  # a new segment for later writes; none deleted
    items = durability.items
    assert held(items) == {}  # the first slice was rolled back with the rest
    assert (items.covered, items.flushes, items.items_written) == (0, 0, 0)

    assert await durability.flush() == 5  # and the store's transaction is not left open
    assert held(items) == states(durability.store)
    assert len(held(items)) == 5 and items.covered == 1  # nothing logged in 2: not rotated again
    assert segments(tmp_path) == ["wal-000000000002.log"]
    await durability.close()


async def test_a_failed_flush_loses_nothing_at_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durability, _ = start(tmp_path)
    for number in range(1, 4):
        await like(durability, number, number)

    async def fails(self: ItemStore, pairs: list[tuple[bytes, bytes]]) -> None:
        raise DataDirError("disk full")

    monkeypatch.setattr(ItemStore, "put", fails)
    with pytest.raises(DataDirError):
        await durability.flush()
    fingerprint = durability.store.fingerprint()
    await durability.close()  # its final flush fails too: logged, and the log keeps everything
    monkeypatch.undo()
    again, recovery = start(tmp_path)
    assert recovery.records == 3 and again.items.covered == 0
    assert again.store.fingerprint() == fingerprint
    await again.close()


async def test_a_previous_versions_snapshot_reaches_the_item_store_at_the_first_flush_and_is_deleted(
    tmp_path: Path,
) -> None:
    first, second = liked_by(range(1, 3)), liked_by(range(3, 4))
    (tmp_path / "wal-000000000001.log").write_bytes(  # covered by the snapshot: never replayed
        LOG_MAGIC + encode_record([(post(7).to_bytes(), encode_item(liked_by(range(50, 51))))])
    )
    write_snapshot(
        tmp_path, 1, [[(post(1).to_bytes(), encode_item(first))], [(post(2).to_bytes(), encode_item(second))]]
    )
    durability, recovery = start(tmp_path)
    assert recovery.snapshot == [
        (post(1).to_bytes(), encode_item(first)),
        (post(2).to_bytes(), encode_item(second)),
    ]
    assert recovery.records == 0 and not (tmp_path / "wal-000000000001.log").exists()
    assert resumes_writer(recovery, durability.wal, durability.items.covered)
    store = durability.store
    assert counts(store, range(1, 4)) == {1: 2, 2: 1, 3: 0} and store.count(post(7)) == 0
    assert len(store.unflushed) == 2  # the snapshot's items: the first flush writes them
    assert (tmp_path / SNAPSHOT).exists() and len(durability.items) == 0
    await like(durability, 3, 9)
    assert await durability.flush() == 3
    assert not (tmp_path / SNAPSHOT).exists()
    assert held(durability.items) == states(store)
    assert set(held(durability.items)) == {post(n).to_bytes() for n in (1, 2, 3)}
    fingerprint = store.fingerprint()
    await durability.close()

    again, recovery = start(tmp_path)
    assert recovery.snapshot == [] and recovery.records == 0
    assert again.store.fingerprint() == fingerprint
    assert counts(again.store, range(1, 4)) == {1: 2, 2: 1, 3: 1}
    await again.close()


async def test_a_clean_stop_flushes_so_the_next_start_replays_no_log_record(tmp_path: Path) -> None:
    durability, _ = start(tmp_path)
    for number in range(1, 4):
        await like(durability, number, number, 2 * number)
    fingerprint = durability.store.fingerprint()
    await durability.close()
    assert durability.items.flushes == 1 and durability.items.items_written == 3
    assert segments(tmp_path) == ["wal-000000000002.log"]  # the empty segment the flush rotated to

    again, recovery = start(tmp_path)
    assert recovery.records == 0 and recovery.deltas == [] and recovery.clean
    assert resumes_writer(recovery, again.wal, again.items.covered)
    assert again.items.covered == 1 and len(again.items) == 3
    assert again.store.fingerprint() == fingerprint
    assert len(again.store.unflushed) == 0
    await again.close()
