"""A lane writes an item's state at most once an interval, and remembers its writes only as long as an
interval lasts: a node that wrote a million items once does not keep a million timestamps."""

from __future__ import annotations

import asyncio
import time

import pytest

from node.checkpoint import SqliteSink
from node.checkpoint import checkpointer as checkpointer_module
from node.checkpoint.checkpointer import Lane
from node.state.item import ItemKey, decode_item
from node.state.store import LikeStore

INTERVAL = 0.3


async def stored(sink: SqliteSink) -> dict[ItemKey, set[int]]:
    """The likers of each state the sink holds."""
    states: dict[ItemKey, set[int]] = {}
    async for raw, state in sink.load_states():
        states[ItemKey.from_bytes(raw)] = set(decode_item(state, max_bytes=1 << 20).likers)
    return states


async def test_states_wait_out_the_interval_and_old_writes_are_forgotten(
    sqlite_sink: SqliteSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer_module, "SQLITE_STATE_INTERVAL", INTERVAL)
    monkeypatch.setattr(checkpointer_module, "SMALL_STATE_LIKES", 0)  # one liker is not small here
    monkeypatch.setattr(checkpointer_module, "LARGE_STATE_INTERVAL", INTERVAL / 2)
    store = LikeStore("n1-0123456789abcdef.1")
    lane = Lane(sqlite_sink, batch_items=2, max_backoff=1.0)
    keys = [ItemKey("post", i) for i in range(3)]

    async def write(*likes: tuple[ItemKey, int]) -> None:
        for key, user in likes:
            store.like(key, user)
        lane.absorb(store.drain_dirty(), since=time.monotonic())
        await lane.flush(store, int(time.time() * 1000), {})

    await write(*((key, 1) for key in keys))
    assert await stored(sqlite_sink) == {key: {1} for key in keys}
    assert len(lane._state_written) == 3

    await write((keys[0], 2))  # within the interval: the rows are written, the state is not
    assert (await stored(sqlite_sink))[keys[0]] == {1}

    await asyncio.sleep(INTERVAL * 1.2)
    await write((keys[1], 2))  # past it: written, and the writes older than the interval are dropped
    assert (await stored(sqlite_sink))[keys[1]] == {1, 2}
    assert list(lane._state_written) == [keys[1].to_bytes()]
    await write((keys[0], 3))  # forgotten means due: its state is written at once
    assert (await stored(sqlite_sink))[keys[0]] == {1, 2, 3}


async def test_a_small_item_has_its_state_written_every_time_and_is_not_remembered(
    sqlite_sink: SqliteSink,
) -> None:
    store = LikeStore("n1-0123456789abcdef.1")
    lane = Lane(sqlite_sink, batch_items=10, max_backoff=1.0)
    key = ItemKey("post", 1)
    for user in range(1, checkpointer_module.SMALL_STATE_LIKES + 1):
        store.like(key, user)
        lane.absorb(store.drain_dirty(), since=time.monotonic())
        await lane.flush(store, int(time.time() * 1000), {})
        assert (await stored(sqlite_sink))[key] == set(range(1, user + 1))
    assert not lane._state_written
    store.like(key, 0)  # one more: no longer small, so from now on its state waits out the interval
    lane.absorb(store.drain_dirty(), since=time.monotonic())
    await lane.flush(store, int(time.time() * 1000), {})
    assert list(lane._state_written) == [key.to_bytes()]
