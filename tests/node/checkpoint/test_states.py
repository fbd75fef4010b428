"""The stored states read back whole: what ``likes restore --from mysql`` rebuilds a cluster from."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdt import PNCounter
from node.checkpoint import ItemCheckpoint, MysqlSink, SqliteSink, StateSink
from node.checkpoint.mysql_sink import STATE_CHUNK_BYTES
from node.errors import SinkDataError
from node.state.item import Item, ItemKey, decode_item, encode_item
from tests.node.checkpoint.conftest import MysqlDatabase


def real_state(likers: int) -> bytes:
    item = Item()
    for user in range(likers):
        item.likers.add("n1-0123456789abcdef.1", user * 7919)
    item.counters["views"] = PNCounter()
    item.counters["views"].increment("n1-0123456789abcdef.1", 12)
    return encode_item(item)


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def checkpoint(key: ItemKey, state: bytes | None, count: int = 0) -> ItemCheckpoint:
    return ItemCheckpoint(key=key, count=count, liked={}, unliked=(), counters={}, state=state)


async def loaded(sink: StateSink) -> dict[ItemKey, bytes]:
    found: dict[ItemKey, bytes] = {}
    async for key, state in sink.load_states():
        assert ItemKey.from_bytes(key) not in found, "a state was yielded twice"
        found[ItemKey.from_bytes(key)] = state
    return found


@pytest.fixture(params=["sqlite", "mysql"])
def state_sink(request: pytest.FixtureRequest) -> StateSink:
    sink: StateSink = request.getfixturevalue(f"{request.param}_sink")
    return sink


async def test_load_states_round_trips_every_state_including_one_over_three_mib(
    state_sink: StateSink,
) -> None:
    small = real_state(50)
    big = blob(3 * STATE_CHUNK_BYTES + 12_345, seed=1)  # four chunks in MySQL, the last one partial
    exact = blob(2 * STATE_CHUNK_BYTES, seed=2)  # exactly two chunks
    states = {
        ItemKey("post", 1): small,
        ItemKey("post", 2**64 - 1): big,
        ItemKey("video", 7): exact,
        ItemKey("a", 0): b"\x01",
    }
    # One batch with several items (one transaction), and the rest one at a time.
    items = list(states.items())
    await state_sink.write([checkpoint(key, state) for key, state in items[:2]])
    for key, state in items[2:]:
        await state_sink.write([checkpoint(key, state)])
    await state_sink.write([checkpoint(ItemKey("post", 3), None, count=4)])  # no state: not yielded

    assert await loaded(state_sink) == states
    decoded = decode_item(states[ItemKey("post", 1)], max_bytes=1 << 20)
    assert len(decoded.likers) == 50


async def test_a_new_state_replaces_the_old_one_and_none_keeps_it(state_sink: StateSink) -> None:
    key, other = ItemKey("post", 10), ItemKey("post", 11)
    await state_sink.write(
        [checkpoint(key, blob(3 * STATE_CHUNK_BYTES + 1, seed=3)), checkpoint(other, b"x")]
    )
    smaller = blob(STATE_CHUNK_BYTES + 1, seed=4)
    await state_sink.write([checkpoint(key, smaller, count=2)])  # fewer chunks than before
    await state_sink.write([checkpoint(key, None, count=3), checkpoint(other, None, count=1)])
    await state_sink.write([checkpoint(key, None, count=3)])  # the same batch twice

    assert await loaded(state_sink) == {key: smaller, other: b"x"}
    assert await state_sink.read_item(key) == (3, set())


async def test_mysql_keeps_states_in_chunks_of_at_most_one_mib(
    mysql_sink: MysqlSink, mysql_database: MysqlDatabase
) -> None:
    key = ItemKey("post", 1)
    await mysql_sink.write([checkpoint(key, blob(3 * STATE_CHUNK_BYTES + 5, seed=5))])
    await mysql_sink.write([checkpoint(key, blob(STATE_CHUNK_BYTES + 5, seed=6))])
    rows = await mysql_database.raw.query(
        "SELECT seq, LENGTH(data) FROM like_item_state_chunks WHERE content_type = 'post' AND content_id = 1"
        " ORDER BY seq"
    )
    assert [(int(seq), int(size)) for seq, size in rows] == [(0, STATE_CHUNK_BYTES), (1, 5)]


async def test_mysql_refuses_to_restore_a_state_it_cannot_read_back_whole(
    mysql_sink: MysqlSink, mysql_database: MysqlDatabase
) -> None:
    await mysql_sink.write([checkpoint(ItemKey("post", 1), blob(2 * STATE_CHUNK_BYTES + 5, seed=7))])
    await mysql_database.raw.query("DELETE FROM like_item_state_chunks WHERE seq = 1")
    with pytest.raises(SinkDataError, match="post:1"):
        await loaded(mysql_sink)


async def test_sqlite_keeps_its_states_across_reopening(sqlite_sink: SqliteSink, sqlite_path: Path) -> None:
    await sqlite_sink.write([checkpoint(ItemKey("post", 1), b"state")])
    await sqlite_sink.close()
    again = SqliteSink(sqlite_path)
    await again.open()
    try:
        assert await loaded(again) == {ItemKey("post", 1): b"state"}
    finally:
        await again.close()
