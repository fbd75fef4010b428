"""SQLite, Redis and MySQL, fed the same random checkpoint batches, always hold what the model holds.

In the manner of Hypothesis's ``tests/redis/test_redis_exampledatabase.py``: one random story runs
against every store and a trivial model, and after every step they must agree. A story is a node's
life seen by its checkpointer: likes, unlikes and re-likes of a few users (including ids above 2**63)
on a few items, counter updates, checkpoints of the changed users (sometimes written twice, as a
retry does), lost dirty marks (a checkpointer that restarted) and full rewrites that repair them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import PNCounter
from node.checkpoint import CheckpointSink, ItemCheckpoint, MysqlSink, RedisSink, SqliteSink
from node.state.item import Item, ItemKey, encode_item
from tests.node.checkpoint.stores import MysqlRaw, RawReader, RedisRaw, SinkModel, SqliteRaw, assert_holds

#: Few items and users, so likes, unlikes and re-likes of one user on one item are common.
ITEMS = 2
USERS = [1, 42, 2**64 - 1]
WRITER = "n1-0123456789abcdef.1"
#: Each example gets items no earlier example touched (the stores live for the whole test).
_item_ids = itertools.count(1)

ItemIndex = st.integers(0, ITEMS - 1)
#: A user likes the item if they did not, and unlikes it if they did.
Toggle = st.tuples(st.just("toggle"), ItemIndex, st.sampled_from(USERS))
Count = st.tuples(st.just("count"), ItemIndex, st.sampled_from(["views", "shares"]), st.integers(-3, 3))
#: Checkpoint what changed: (write it twice?, with the states?).
Flush = st.tuples(st.just("flush"), st.booleans(), st.booleans())
#: The checkpointer forgets what changed on an item: only a full rewrite repairs the sinks.
Forget = st.tuples(st.just("forget"), ItemIndex)
#: Rewrite an item whole: (item, write it twice?).
Full = st.tuples(st.just("full"), ItemIndex, st.booleans())
#: A step: a few operations on the node, then what the checkpointer does.
Step = st.tuples(
    st.lists(st.one_of(Toggle, Toggle, Count), min_size=1, max_size=3), st.one_of(Flush, Flush, Forget, Full)
)


@dataclass
class Truth:
    """The node side: real items, and what changed since the last checkpoint."""

    keys: list[ItemKey]
    items: list[Item] = field(default_factory=lambda: [Item() for _ in range(ITEMS)])
    liked_at: list[dict[int, int]] = field(default_factory=lambda: [{} for _ in range(ITEMS)])
    dirty: list[set[int]] = field(default_factory=lambda: [set() for _ in range(ITEMS)])
    counters_dirty: set[int] = field(default_factory=set)
    clock: int = 1_700_000_000_000

    def tick(self) -> int:
        self.clock += 1_001
        return self.clock

    def toggle(self, index: int, user: int) -> None:
        likers = self.items[index].likers
        if user in likers:
            likers.remove(user)
        else:
            likers.add(WRITER, user)
            self.liked_at[index][user] = self.tick()
        self.dirty[index].add(user)

    def count(self, index: int, name: str, amount: int) -> None:
        counter = self.items[index].counters.setdefault(name, PNCounter())
        counter.increment(WRITER, amount) if amount >= 0 else counter.decrement(WRITER, -amount)
        self.counters_dirty.add(index)

    def checkpoint(self, index: int, *, with_state: bool, full: bool = False) -> ItemCheckpoint:
        item = self.items[index]
        now = self.tick()
        if full:
            # The checkpointer may not know when old likes happened: the sinks must keep their own.
            liked = {user: now for user in item.likers}
            unliked: set[int] = set()
        else:
            liked = {user: self.liked_at[index][user] for user in self.dirty[index] if user in item.likers}
            unliked = {user for user in self.dirty[index] if user not in item.likers}
        self.dirty[index].clear()
        self.counters_dirty.discard(index)
        return ItemCheckpoint(
            key=self.keys[index],
            count=len(item.likers),
            liked=liked,
            unliked=unliked,
            counters=item.counter_values(),
            state=encode_item(item) if with_state else None,
            full=full,
        )

    def changed(self) -> list[int]:
        return sorted({i for i in range(ITEMS) if self.dirty[i]} | self.counters_dirty)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(Step, min_size=1, max_size=10))
async def test_every_sink_holds_what_the_model_holds(
    steps: Sequence[tuple[Sequence[tuple[object, ...]], tuple[object, ...]]],
    sqlite_sink: SqliteSink,
    sqlite_raw: SqliteRaw,
    redis_sink: RedisSink,
    redis_raw: RedisRaw,
    mysql_sink: MysqlSink,
    mysql_raw: MysqlRaw,
) -> None:
    base = next(_item_ids) * 10
    truth = Truth(keys=[ItemKey("post", base + i) for i in range(ITEMS)])
    model = SinkModel()
    stores: list[tuple[CheckpointSink, RawReader]] = [
        (sqlite_sink, sqlite_raw),
        (redis_sink, redis_raw),
        (mysql_sink, mysql_raw),
    ]
    for operations, then in steps:
        for operation in operations:
            match operation:
                case ("toggle", int(index), int(user)):
                    truth.toggle(index, user)
                case ("count", int(index), str(name), int(amount)):
                    truth.count(index, name, amount)
        twice = False
        match then:
            case ("flush", bool(twice), bool(with_state)):
                batch = [truth.checkpoint(i, with_state=with_state) for i in truth.changed()]
            case ("forget", int(index)):
                truth.dirty[index].clear()
                truth.counters_dirty.discard(index)
                continue
            case ("full", int(index), bool(twice)):
                batch = [truth.checkpoint(index, with_state=True, full=True)]
        if not batch:
            continue
        model.write(batch)
        for sink, raw in stores:
            for _ in range(2 if twice else 1):
                await sink.write(batch)
            await assert_holds(sink, raw, model, truth.keys)
