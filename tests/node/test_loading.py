"""Reading the item store in while the node serves (``node.durable.loading``): a start reads the first
items, the store reads any other item from the item store before it is read or changed, the rest
arrives a page at a time in the background; meanwhile the node is not ready and refuses listings, and a
damaged state found then refuses writes, or with the operator's leave is dropped under a new actor."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gossip.errors import PayloadError
from node.config import ClusterConfig
from node.durable import loading
from node.durable.durability import Durability
from node.durable.itemstore import FILE, ItemStore
from node.durable.loading import StoreLoader
from node.durable.wal import DISCARD_FLAG, Recovery, WriteAheadLog
from node.errors import DataDirError, NotDurable, Unavailable
from node.http.api import NodeDescription, create_app, not_ready_reasons
from node.process.server import open_item_store, open_store
from node.state.item import encode_item
from tests.node.conftest import TEST_LIMITS, ClientFactory, SoloCluster, solo_durability
from tests.node.test_flush import WRITER, like, liked_by, post, start
from tests.node.test_itemstore import flip_last_byte
from tests.node.test_metrics import scrape

#: The items of the stored node, the ones a restart reads before it serves, and a page after that.
ITEMS = 50
AT_START = 10
PAGE = 7
NUMBERS = range(1, ITEMS + 1)
#: The writer a node gets when damaged states are dropped while it serves (another actor).
NEW_WRITER = "n1-fedcba9876543210.1"
#: How long any wait of these tests may take, in seconds.
PATIENCE = 5.0


def likers(number: int) -> range:
    """Who likes ``post:number`` in the stored node: users 1 to 1-4 (user 1 likes every post)."""
    return range(1, number % 4 + 2)


def unread(numbers: range = NUMBERS) -> list[int]:
    """The posts a start with ``AT_START`` does not read before it serves: the item store is read in
    key order."""
    first = sorted(post(number).to_bytes() for number in numbers)[:AT_START]
    return [number for number in numbers if post(number).to_bytes() not in first]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads ``PAGE`` items per turn: the 40 items after the first take several."""
    monkeypatch.setattr(loading, "PAGE", PAGE)


async def stored_node(directory: Path) -> tuple[str, dict[int, int]]:
    """A node whose ``ITEMS`` posts are all in its item store (flushed, then stopped cleanly); its
    fingerprint and every post's count."""
    durability, _ = start(directory)
    for number in NUMBERS:
        await like(durability, number, *likers(number))
    assert await durability.flush() == ITEMS
    fingerprint, counts = durability.store.fingerprint(), all_counts(durability)
    await durability.close()
    return fingerprint, counts


def all_counts(durability: Durability) -> dict[int, int]:
    """The like count of every post."""
    return {number: durability.store.count(post(number)) for number in NUMBERS}


def reopen(
    directory: Path,
    *,
    at_start: int = AT_START,
    discard_damaged: bool = False,
    new_actor: Callable[[], str] | None = None,
) -> tuple[Durability, StoreLoader, Recovery]:
    """The node over ``directory`` opened as ``run_node`` opens it, reading ``at_start`` items before
    it serves; not started (``Durability.start`` starts the loader)."""
    items = ItemStore(directory)
    assert open_item_store(items, discard_damaged=discard_damaged) is None
    wal = WriteAheadLog(directory)
    recovery = wal.open(items.covered, discard_damaged_snapshot=discard_damaged)
    store, loader = open_store(
        ClusterConfig(nodes=()),
        WRITER,
        items,
        recovery,
        discard_damaged=discard_damaged,
        new_actor=new_actor,
        at_start=at_start,
    )
    return solo_durability(store, wal, items, SoloCluster(), loader=loader), loader, recovery


def hold(loader: StoreLoader, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Keep ``loader`` from reading anything in the background until the event returned is set."""
    run = loader.run
    go = asyncio.Event()

    async def held() -> None:
        await go.wait()
        await run()

    monkeypatch.setattr(loader, "run", held)
    return go


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (``PATIENCE`` at most) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not condition():
        assert loop.time() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


async def read_in(loader: StoreLoader) -> None:
    """Wait until the loader has read every item in."""
    await until(lambda: loader.done or loader.failure is not None, "the item store to be read in")
    assert loader.failure is None, loader.failure


def first_damaged_later(directory: Path) -> int:
    """Damage the stored state of a post the start reads only in the background; that post."""
    number = unread()[len(unread()) // 2]
    flip_last_byte(directory / FILE, post(number).to_bytes())
    return number


# -- reading in ------------------------------------------------------------------------------------


async def test_a_start_reads_only_the_first_items_and_any_other_by_a_point_read(tmp_path: Path) -> None:
    _, counts = await stored_node(tmp_path)
    durability, loader, recovery = reopen(tmp_path)
    store = durability.store
    assert recovery.records == 0
    assert not loader.done and loader.loaded == AT_START and len(store) == AT_START
    later = unread()
    assert {post(n).to_bytes() for n in NUMBERS} - set(store.item_keys()) == {
        post(n).to_bytes() for n in later
    }
    counted, checked, listed = later[0], later[1], later[2]
    assert store.count(post(counted)) == counts[counted]
    assert store.liked(post(checked), 1) and not store.liked(post(checked), 99)
    assert store.likers(post(listed), after=None, limit=10) == (list(likers(listed)), False)
    assert store.count(post(ITEMS + 1)) == 0  # in neither: no item is made up
    assert len(store) == AT_START + 3 and loader.loaded == AT_START  # the loader still reads them all
    assert len(store.unflushed) == 0  # read from the item store: nothing to write back
    await durability.close()


async def test_a_like_of_an_item_not_read_in_yet_counts_on_top_of_its_stored_likes(tmp_path: Path) -> None:
    fingerprint, counts = await stored_node(tmp_path / "lazy")
    shutil.copytree(tmp_path / "lazy", tmp_path / "whole")
    number = unread()[-1]
    durability, loader, _ = reopen(tmp_path / "lazy")
    store = durability.store
    result = store.like(post(number), 777)  # staged before the loader may run at all
    assert result.changed and result.count == counts[number] + 1
    assert result.dot is not None and result.dot[0] == WRITER
    durability.start()
    await durability.commit(durability.level(None))
    assert store.count(post(number)) == counts[number] + 1
    await read_in(loader)
    assert len(store) == ITEMS and loader.loaded == ITEMS
    assert all_counts(durability) == {**counts, number: counts[number] + 1}
    assert store.fingerprint() != fingerprint

    # The same like on the same store read in whole first: the same state, to the dot.
    whole, _ = start(tmp_path / "whole")
    await like(whole, number, 777)
    assert store.fingerprint() == whole.store.fingerprint()
    assert all_counts(durability) == all_counts(whole)
    await whole.close()
    await durability.close()


async def test_an_unlike_of_an_item_not_read_in_yet_stays_once_its_stored_state_is_read_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, counts = await stored_node(tmp_path)
    number = unread()[-1]
    durability, loader, _ = reopen(tmp_path)
    go = hold(loader, monkeypatch)
    durability.start()
    store = durability.store
    assert store.unlike(post(number), 1).count == counts[number] - 1
    await durability.commit(durability.level(None))
    go.set()
    await read_in(loader)
    assert not store.liked(post(number), 1) and store.count(post(number)) == counts[number] - 1
    assert await durability.flush() == 1
    await durability.close()
    again, _ = start(tmp_path)
    assert not again.store.liked(post(number), 1) and again.store.count(post(number)) == counts[number] - 1
    await again.close()


async def test_a_peers_delta_for_an_item_not_read_in_yet_joins_its_stored_state(tmp_path: Path) -> None:
    _, counts = await stored_node(tmp_path)
    number = unread()[0]
    durability, loader, _ = reopen(tmp_path)
    store = durability.store
    store.merge(post(number).to_bytes(), encode_item(liked_by(range(100, 103))))
    assert store.count(post(number)) == counts[number] + 3 and store.liked(post(number), 1)
    assert len(store.unflushed) == 1  # the peer's change, not the stored state, is for the next flush
    durability.start()
    await read_in(loader)
    assert all_counts(durability) == {**counts, number: counts[number] + 3}
    assert await durability.flush() == 1
    await durability.close()
    again, _ = start(tmp_path)
    assert again.store.count(post(number)) == counts[number] + 3
    await again.close()


async def test_a_log_tail_for_items_not_read_in_yet_joins_their_stored_states_before_the_node_serves(
    tmp_path: Path,
) -> None:
    await stored_node(tmp_path)
    liked, unliked = unread()[0], unread()[-1]
    durability, _ = start(tmp_path)
    await like(durability, liked, 500)
    assert durability.store.unlike(post(unliked), 1).changed
    await durability.commit(durability.level(None))
    fingerprint, counts = durability.store.fingerprint(), all_counts(durability)
    await durability.close(flush=False)  # as a crash would leave it: the two writes only in the log

    again, loader, recovery = reopen(tmp_path)
    store = again.store
    assert recovery.records == 2 and not loader.done
    assert len(store) == AT_START + 2  # the tail's items, each with its stored state
    assert store.count(post(liked)) == counts[liked] and store.liked(post(liked), 1)
    assert store.count(post(unliked)) == counts[unliked] and not store.liked(post(unliked), 1)
    assert len(store.unflushed) == 2  # the tail must reach the item store at the next flush
    again.start()
    await read_in(loader)
    assert store.fingerprint() == fingerprint and all_counts(again) == counts
    assert await again.flush() == 2
    await again.close()


async def test_once_read_in_the_store_reads_through_no_more_and_holds_every_item_as_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fingerprint, counts = await stored_node(tmp_path)
    durability, loader, _ = reopen(tmp_path)
    durability.start()
    await read_in(loader)
    store = durability.store

    def no_point_read(self: ItemStore, key: bytes) -> bytes | None:
        raise AssertionError(f"a point read of {key!r} once every item is read in")

    monkeypatch.setattr(ItemStore, "state", no_point_read)
    assert store.count(post(ITEMS + 1)) == 0 and not store.liked(post(ITEMS + 1), 1)
    assert len(store) == ITEMS and loader.loaded == ITEMS
    assert store.fingerprint() == fingerprint and all_counts(durability) == counts
    assert store.likes == sum(counts.values())
    assert store.liked_items(1, after=None, limit=ITEMS) == ([post(n) for n in NUMBERS], False)
    assert len(store.unflushed) == 0
    assert await durability.flush() == 0  # nothing changed: nothing read in is written back
    assert loader.not_ready() is None and not_ready_reasons(durability) == []
    loader.check_listing()
    await durability.close()


async def test_a_flush_while_reading_in_writes_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, counts = await stored_node(tmp_path)
    number = unread()[3]
    durability, loader, _ = reopen(tmp_path)
    go = hold(loader, monkeypatch)
    durability.start()
    await like(durability, number, 900)
    assert await durability.flush() == 1
    assert len(durability.items) == ITEMS
    go.set()
    await read_in(loader)
    assert await durability.flush() == 0
    assert all_counts(durability) == {**counts, number: counts[number] + 1}
    await durability.close()


async def test_a_store_read_in_whole_at_start_needs_no_loader_run(tmp_path: Path) -> None:
    fingerprint, _ = await stored_node(tmp_path)
    durability, loader, _ = reopen(tmp_path, at_start=ITEMS + 1)
    assert loader.done and loader.loaded == ITEMS and loader.not_ready() is None
    assert durability.store.fingerprint() == fingerprint
    durability.start()
    assert durability._loading is None
    await durability.close()


# -- over HTTP -------------------------------------------------------------------------------------


async def answer(response: Any) -> tuple[int, Any]:
    """A response's status and JSON body."""
    return response.status, orjson.loads(await response.read())


async def test_while_reading_in_the_node_is_not_ready_and_refuses_listings_but_answers_items(
    tmp_path: Path, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, counts = await stored_node(tmp_path)
    durability, loader, _ = reopen(tmp_path)
    go = hold(loader, monkeypatch)
    node = NodeDescription(
        name="n1",
        actor="n1-0123456789abcdef",
        writer=WRITER,
        url="http://127.0.0.1:8001",
        gossip_address="127.0.0.1:9001",
        pid=os.getpid(),
    )
    client = await aiohttp_client(create_app(durability, TEST_LIMITS, node, SoloCluster()))
    number = unread()[5]

    status, body = await answer(await client.get("/readyz"))
    assert status == 503 and body["error"]["code"] == "not_ready"
    assert f"reading the item store in: {AT_START} items so far" in body["error"]["message"]
    listing = await client.get("/v1/users/1/likes", params={"limit": str(ITEMS)})
    assert listing.status == 503 and listing.headers["Retry-After"] == "1"
    assert (await answer(listing))[1]["error"]["code"] == "unavailable"
    status, body = await answer(await client.get(f"/v1/items/post/{number}"))
    assert status == 200 and body["count"] == counts[number]
    status, body = await answer(await client.get(f"/v1/items/post/{number}/likes/1"))
    assert status == 200 and body == {"liked": True}
    assert (await client.put(f"/v1/items/post/{number}/likes/55")).status == 200  # writes are taken
    found = await scrape(client)
    assert found.value("likes_item_store_loading") == 1.0
    assert found.value("likes_item_store_loaded_items") == AT_START
    status, body = await answer(await client.get("/v1/cluster"))
    assert status == 200
    assert body["wal"]["item_store"]["loading"] is True
    assert body["wal"]["item_store"]["loaded_items"] == AT_START

    go.set()
    await read_in(loader)
    status, body = await answer(await client.get("/readyz"))
    assert status == 200 and body["ready"] is True
    status, body = await answer(await client.get("/v1/users/1/likes", params={"limit": str(ITEMS)}))
    assert status == 200 and body["next"] is None
    assert body["items"] == [{"type": "post", "id": n} for n in NUMBERS]
    status, body = await answer(await client.get("/v1/users/55/likes"))
    assert status == 200 and body["items"] == [{"type": "post", "id": number}]
    status, body = await answer(await client.get(f"/v1/items/post/{number}"))
    assert status == 200 and body["count"] == counts[number] + 1
    found = await scrape(client)
    assert found.value("likes_item_store_loading") == 0.0
    assert found.value("likes_item_store_loaded_items") == ITEMS
    status, body = await answer(await client.get("/v1/cluster"))
    assert body["wal"]["item_store"]["loading"] is False
    assert body["wal"]["item_store"]["loaded_items"] == ITEMS


# -- damage found while serving --------------------------------------------------------------------


async def test_a_damaged_state_found_while_serving_refuses_writes_until_a_restart_with_the_flag(
    tmp_path: Path,
) -> None:
    _, counts = await stored_node(tmp_path)
    damaged = first_damaged_later(tmp_path)
    durability, loader, _ = reopen(tmp_path)  # the damage is beyond what a start reads: it starts
    store = durability.store
    assert store.writable and loader.failure is None
    durability.start()
    await until(lambda: loader.failure is not None, "the damage to be found")
    assert not loader.done and not store.writable and not durability.writable
    with pytest.raises(NotDurable, match=DISCARD_FLAG):
        store.like(post(1), 999)
    reason = loader.not_ready()
    assert reason is not None and "fails its checksum" in reason and DISCARD_FLAG in reason
    assert not_ready_reasons(durability) == [reason]
    with pytest.raises(Unavailable, match="damaged"):
        store.count(post(damaged))
    with pytest.raises(Unavailable):
        loader.check_listing()
    with pytest.raises(PayloadError, match="damaged"):
        store.merge(post(damaged).to_bytes(), encode_item(liked_by(range(1, 3))))
    # Every other item is still read as stored, the ones after the damaged one by point reads.
    for number in NUMBERS:
        if number != damaged:
            assert store.count(post(number)) == counts[number]
    await durability.close()


async def test_a_damaged_state_read_before_the_loader_reaches_it_refuses_writes_as_well(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stored_node(tmp_path)
    damaged = first_damaged_later(tmp_path)
    durability, loader, _ = reopen(tmp_path)
    hold(loader, monkeypatch)
    durability.start()
    with pytest.raises(Unavailable, match="damaged") as raised:
        durability.store.liked(post(damaged), 1)
    assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "1"}
    assert loader.failure is not None and DISCARD_FLAG in loader.failure
    with pytest.raises(NotDurable, match=DISCARD_FLAG):
        durability.store.like(post(1), 999)
    await durability.close()


async def test_with_discard_a_damaged_state_found_while_serving_is_dropped_and_writes_go_on_as_a_new_actor(
    tmp_path: Path,
) -> None:
    _, counts = await stored_node(tmp_path)
    damaged = first_damaged_later(tmp_path)
    claims: list[str] = []

    def new_actor() -> str:
        claims.append(NEW_WRITER)
        return NEW_WRITER

    durability, loader, recovery = reopen(tmp_path, discard_damaged=True, new_actor=new_actor)
    store = durability.store
    assert recovery.damage == [] and store.writer == WRITER  # nothing damaged in the first items
    durability.start()
    await until(lambda: store.writer == NEW_WRITER, "the switch to a new actor")
    await read_in(loader)
    assert claims == [NEW_WRITER] and loader.failure is None and loader.not_ready() is None
    assert len(store) == ITEMS - 1 and loader.loaded == ITEMS - 1
    assert all_counts(durability) == {**counts, damaged: 0}
    assert await durability.flush() == 0  # the flush, the store's writer, deletes the damaged row
    assert post(damaged).to_bytes() not in dict(durability.items.states())
    assert len(durability.items) == ITEMS - 1 and durability.items.damaged == []
    result = store.like(post(damaged), 5)
    assert result.changed and result.dot is not None and result.dot[0] == NEW_WRITER
    await durability.commit(durability.level(None))
    await like(durability, 1, 999)
    assert store.count(post(damaged)) == 1 and store.count(post(1)) == counts[1] + 1
    await durability.close()

    again, loader, recovery = reopen(tmp_path)  # nothing damaged is left
    again.start()
    await read_in(loader)
    assert again.store.count(post(damaged)) == 1 and again.store.count(post(1)) == counts[1] + 1
    await again.close()


async def test_with_discard_a_damaged_state_read_before_the_loader_reaches_it_does_not_refuse_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stored_node(tmp_path)
    damaged = first_damaged_later(tmp_path)
    durability, loader, _ = reopen(tmp_path, discard_damaged=True, new_actor=lambda: NEW_WRITER)
    go = hold(loader, monkeypatch)
    durability.start()
    try:
        assert durability.store.count(post(damaged)) == 0  # read as absent, never as damaged
        go.set()
        await until(lambda: durability.store.writer == NEW_WRITER, "the switch to a new actor")
        assert loader.failure is None and durability.store.writable and loader.not_ready() is None
    finally:
        await durability.close()


@pytest.mark.parametrize("discard_damaged", [False, True], ids=["without-flag", "with-flag"])
async def test_a_log_tail_over_a_damaged_state_not_read_at_start_stops_the_start_as_a_data_dir_error(
    tmp_path: Path, discard_damaged: bool
) -> None:
    await stored_node(tmp_path)
    number = unread()[20]
    durability, _ = start(tmp_path)
    await like(durability, number, 4242)
    await durability.close(flush=False)
    flip_last_byte(tmp_path / FILE, post(number).to_bytes())
    items = ItemStore(tmp_path)
    assert open_item_store(items, discard_damaged=discard_damaged) is None
    wal = WriteAheadLog(tmp_path)
    recovery = wal.open(items.covered, discard_damaged_snapshot=discard_damaged)
    try:
        if discard_damaged:  # starts without the damaged state, as a start reading it would
            store, _ = open_store(
                ClusterConfig(nodes=()), WRITER, items, recovery, discard_damaged=True, at_start=AT_START
            )
            assert store.count(post(number)) == 1
        else:  # refused, naming the flag, as a start reading it would be
            with pytest.raises(DataDirError, match=DISCARD_FLAG):
                open_store(ClusterConfig(nodes=()), WRITER, items, recovery, at_start=AT_START)
    finally:
        await wal.close()
        items.close()


async def test_a_loader_that_fails_otherwise_leaves_no_item_unread_and_invisible(tmp_path: Path) -> None:
    _, counts = await stored_node(tmp_path)
    first_damaged_later(tmp_path)

    def no_identity() -> str:
        raise DataDirError("no space left on device to claim an identity")

    durability, _, _ = reopen(tmp_path, discard_damaged=True, new_actor=no_identity)
    durability.start()
    task = durability._loading
    assert task is not None
    try:
        await until(task.done, "the loader to stop")
        last = unread()[-1]
        assert durability.store.count(post(last)) == counts[last]  # read through, or refused: not 0
    finally:
        await durability.close()


async def test_with_discard_no_like_is_minted_under_the_old_writer_once_a_damaged_state_is_dropped(
    tmp_path: Path,
) -> None:
    await stored_node(tmp_path)
    damaged = first_damaged_later(tmp_path)
    asked, answer_now = threading.Event(), threading.Event()

    def slow_claim() -> str:  # claiming an identity writes and fsyncs a file: it takes a while
        asked.set()
        answer_now.wait(PATIENCE)
        return NEW_WRITER

    durability, _, _ = reopen(tmp_path, discard_damaged=True, new_actor=slow_claim)
    durability.start()
    try:
        await until(asked.is_set, "a new actor to be claimed")
        try:
            result = durability.store.like(post(damaged), 777)
        except NotDurable:
            pass  # refusing writes until the switch is one way
        else:  # the dropped state held (WRITER, 1): a dot of the old writer may collide with it
            assert result.dot is not None and result.dot[0] != WRITER, result.dot
        await durability.commit(durability.level(None))
    finally:
        answer_now.set()
        await durability.close()
