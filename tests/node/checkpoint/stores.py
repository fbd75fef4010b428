"""What a sink should hold (a trivial in-memory model) and what it does hold (read behind its back).

The model is the whole specification of a sink, in a few lines: liked users keep the liked-at of
their first like (the read model) and their first like ever (``like_records.created_at``), unliked
users go, a full checkpoint drops everyone else, counters and count take the batch's values. The raw
readers look at each store with their own connection, so a check never trusts the code under test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncmy
from redis.asyncio import Redis

from node.checkpoint import CheckpointSink, ItemCheckpoint
from node.checkpoint.records import time_ms
from node.state.item import ItemKey


@dataclass
class ModelItem:
    """What a sink should hold for one item."""

    count: int = 0
    #: user -> liked-at of the like that made them a liker (HSETNX: kept while they keep liking).
    liked: dict[int, int] = field(default_factory=dict)
    #: user -> liked-at of their first like ever (``created_at``; a re-like keeps it).
    first_liked: dict[int, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    state: bytes | None = None


class SinkModel:
    """The specification of every sink, as a dictionary."""

    def __init__(self) -> None:
        self.items: dict[ItemKey, ModelItem] = {}

    def write(self, batch: Sequence[ItemCheckpoint]) -> None:
        for checkpoint in batch:
            item = self.items.setdefault(checkpoint.key, ModelItem())
            gone = set(item.liked).difference(checkpoint.liked) if checkpoint.full else set()
            gone |= set(checkpoint.unliked).difference(checkpoint.liked)
            for user in gone:
                item.liked.pop(user, None)
            for user, at in checkpoint.liked.items():
                item.liked.setdefault(user, at)
                item.first_liked.setdefault(user, at)
            item.count = checkpoint.count
            item.counters.update(checkpoint.counters)
            if checkpoint.state is not None:
                item.state = checkpoint.state

    def item(self, key: ItemKey) -> ModelItem:
        return self.items.get(key, ModelItem())


@dataclass
class RawItem:
    """One item as a store holds it."""

    count: int
    #: user -> (liked-at or created_at in ms, canceled). Redis holds no canceled users.
    records: dict[int, tuple[int, bool]]
    counters: dict[str, int]


class RawReader(Protocol):
    """Reads a store directly, bypassing the sink."""

    #: Whether the store keeps canceled like_records (SQL) or drops unliked users (Redis).
    keeps_history: bool

    async def item(self, key: ItemKey) -> RawItem: ...

    async def duplicate_records(self) -> int:
        """How many (user, content) pairs have more than one like_records row (0 for Redis)."""
        ...


class SqliteRaw:
    keeps_history = True

    def __init__(self, path: Path) -> None:
        self.path = path

    async def item(self, key: ItemKey) -> RawItem:
        with closing(sqlite3.connect(self.path)) as db:
            where = (key.content_type, _signed(key.content_id))
            row = db.execute(
                "SELECT like_count FROM like_item_state WHERE content_type = ? AND content_id = ?", where
            ).fetchone()
            records = {
                _unsigned(user): (time_ms(created), bool(canceled))
                for user, created, canceled in db.execute(
                    "SELECT user_id, created_at, is_canceled FROM like_records"
                    " WHERE content_type = ? AND content_id = ?",
                    where,
                )
            }
            counters = dict(
                db.execute(
                    "SELECT name, value FROM like_counters WHERE content_type = ? AND content_id = ?", where
                )
            )
        return RawItem(0 if row is None else row[0], records, counters)

    async def duplicate_records(self) -> int:
        with closing(sqlite3.connect(self.path)) as db:
            (count,) = db.execute(_DUPLICATES).fetchone()
        return int(count)


class MysqlRaw:
    keeps_history = True

    def __init__(self, conn: asyncmy.Connection) -> None:
        """``conn``: an autocommit connection to the sink's database (so every read is fresh)."""
        self.conn = conn

    async def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql, args or None)
            return list(await cursor.fetchall())

    async def item(self, key: ItemKey) -> RawItem:
        where = (key.content_type, key.content_id)
        rows = await self.query(
            "SELECT like_count FROM like_item_state WHERE content_type = %s AND content_id = %s", where
        )
        records = await self.query(
            "SELECT user_id, created_at, is_canceled FROM like_records"
            " WHERE content_type = %s AND content_id = %s",
            where,
        )
        counters = await self.query(
            "SELECT name, value FROM like_counters WHERE content_type = %s AND content_id = %s", where
        )
        return RawItem(
            int(rows[0][0]) if rows else 0,
            {int(u): (time_ms(at), bool(c)) for u, at, c in records},
            {str(name): int(value) for name, value in counters},
        )

    async def duplicate_records(self) -> int:
        rows = await self.query(_DUPLICATES)
        return int(rows[0][0])


class RedisRaw:
    keeps_history = False

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def item(self, key: ItemKey) -> RawItem:
        item = f"{key.content_type}:{key.content_id}"
        count = await self.client.get(f"{self.prefix}like:count:{item}")
        status = await self.client.hgetall(f"{self.prefix}like:status:{item}")
        counters = await self.client.hgetall(f"{self.prefix}like:counters:{item}")
        return RawItem(
            0 if count is None else int(count),
            {int(user): (int(at), False) for user, at in status.items()},
            {_text(name): int(value) for name, value in counters.items()},
        )

    async def duplicate_records(self) -> int:
        return 0  # a hash field cannot repeat


_DUPLICATES = (
    "SELECT COUNT(*) FROM (SELECT user_id FROM like_records"
    " GROUP BY user_id, content_id, content_type HAVING COUNT(*) > 1) AS repeated"
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


async def assert_holds(
    sink: CheckpointSink, raw: RawReader, model: SinkModel, keys: Sequence[ItemKey]
) -> None:
    """The sink and its store agree with the model on every item of ``keys``."""
    for key in keys:
        expected = model.item(key)
        assert await sink.read_item(key) == (expected.count, set(expected.liked)), f"{sink.name} {key}"
        got = await raw.item(key)
        assert got.count == expected.count
        assert got.counters == expected.counters, f"{sink.name} {key} counters"
        if raw.keeps_history:
            live = {user for user, (_, canceled) in got.records.items() if not canceled}
            canceled = set(got.records) - live
            assert live == set(expected.liked), f"{sink.name} {key} live records"
            assert canceled == set(expected.first_liked) - set(expected.liked), f"{sink.name} {key} canceled"
            created = {user: at for user, (at, _) in got.records.items()}
            assert created == expected.first_liked, f"{sink.name} {key} created_at is the first like"
        else:
            assert got.records == {user: (at, False) for user, at in expected.liked.items()}, (
                f"{sink.name} {key}"
            )
    assert await raw.duplicate_records() == 0, f"{sink.name}: duplicate like_records rows"
