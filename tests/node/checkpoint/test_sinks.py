"""Each sink on its own: large items in chunks, full rewrites, the schema, opening twice, bad urls."""

from __future__ import annotations

import re
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import node.checkpoint.mysql_sink as mysql_module
import node.checkpoint.redis_sink as redis_module
from node.checkpoint import CheckpointSink, ItemCheckpoint, MysqlSink, RedisSink, SqliteSink
from node.errors import SinkUnavailable
from node.state.item import ItemKey
from tests.node.checkpoint.conftest import MysqlDatabase
from tests.node.checkpoint.stores import RawReader, SinkModel, assert_holds

T0 = 1_700_000_000_000


@pytest.fixture(params=["sqlite", "redis", "mysql"])
def store(request: pytest.FixtureRequest) -> tuple[CheckpointSink, RawReader]:
    """Each sink with the reader of its store."""
    return request.getfixturevalue(f"{request.param}_sink"), request.getfixturevalue(f"{request.param}_raw")


def liked(users: range, at: int = T0) -> dict[int, int]:
    return {user: at + user for user in users}


async def test_a_large_item_goes_in_chunks_and_a_full_rewrite_keeps_only_the_current_likers(
    store: tuple[CheckpointSink, RawReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so a few thousand likes cross every chunk, round and transaction boundary.
    monkeypatch.setattr(redis_module, "FIELDS_PER_COMMAND", 70)
    monkeypatch.setattr(redis_module, "FIELDS_PER_ROUND", 300)
    monkeypatch.setattr(mysql_module, "ROWS_PER_STATEMENT", 70)
    monkeypatch.setattr(mysql_module, "COMMIT_ROWS", 300)
    monkeypatch.setattr(mysql_module, "ACTIVE_PAGE_ROWS", 90)
    sink, raw = store
    key, model = ItemKey("post", 7), SinkModel()
    batches = [
        [ItemCheckpoint(key, 3_000, liked(range(3_000)), (), {"views": 1}, None)],
        [ItemCheckpoint(key, 2_500, {}, range(2_500, 3_000), {"views": 2}, None)],
        # Whole again, liked-at "now" for everyone: the sinks keep the first liked-at they hold.
        [
            ItemCheckpoint(
                key, 1_100, liked(range(1_000, 2_100), T0 + 10**6), (), {"views": 3}, b"s", full=True
            )
        ],
    ]
    for batch in batches:
        await sink.write(batch)
        model.write(batch)
        await assert_holds(sink, raw, model, [key])
    assert (await sink.read_item(key))[1] == set(range(1_000, 2_100))


async def test_many_items_in_one_batch(
    store: tuple[CheckpointSink, RawReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_module, "ITEMS_PER_TRANSACTION", 7)
    monkeypatch.setattr(mysql_module, "ROWS_PER_STATEMENT", 5)
    sink, raw = store
    keys = [ItemKey("video", n) for n in range(40)]
    batch = [
        ItemCheckpoint(key, 2, liked(range(2)), (), {"views": n, "shares": -n}, None)
        for n, key in enumerate(keys)
    ]
    model = SinkModel()
    await sink.write(batch)
    await sink.write(batch)
    model.write(batch)
    await assert_holds(sink, raw, model, keys)


async def test_an_item_never_written_reads_as_empty(store: tuple[CheckpointSink, RawReader]) -> None:
    assert await store[0].read_item(ItemKey("post", 404)) == (0, set())


async def test_opening_twice_and_a_second_sink_on_the_same_store_are_harmless(
    store: tuple[CheckpointSink, RawReader],
) -> None:
    sink, raw = store
    await sink.open()
    batch = [ItemCheckpoint(ItemKey("post", 1), 1, {5: T0}, (), {}, None)]
    await sink.write(batch)
    await sink.open()
    model = SinkModel()
    model.write(batch)
    await assert_holds(sink, raw, model, [ItemKey("post", 1)])


async def test_sqlite_reopens_the_same_file(sqlite_sink: SqliteSink, sqlite_path: Path) -> None:
    await sqlite_sink.write([ItemCheckpoint(ItemKey("post", 1), 1, {2**64 - 1: T0}, (), {}, None)])
    again = SqliteSink(sqlite_path)
    await again.open()
    try:
        assert await again.read_item(ItemKey("post", 1)) == (1, {2**64 - 1})
    finally:
        await again.close()


#: like_records as earlier SQLite files have it: MySQL's two keys.
_MYSQL_KEYED_LIKE_RECORDS = """
CREATE TABLE like_records (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, content_id INTEGER NOT NULL,
    content_type TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    is_canceled INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT uk_user_content UNIQUE (user_id, content_id, content_type)
);
CREATE INDEX idx_content ON like_records (content_id, content_type);
"""


async def test_sqlite_keys_lead_with_the_item_and_a_file_with_mysqls_keys_still_works(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh.sqlite"
    sink = SqliteSink(fresh)
    await sink.open()
    await sink.close()
    with closing(sqlite3.connect(fresh)) as db:
        indexes = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'like_records'"
        )
        (index,) = [name for (name,) in indexes]
        assert [row[2] for row in db.execute(f"PRAGMA index_info({index})")] == [
            "content_id",
            "content_type",
            "user_id",
        ]
    older = tmp_path / "older.sqlite"
    with closing(sqlite3.connect(older)) as db:
        db.executescript(_MYSQL_KEYED_LIKE_RECORDS)
    sink, key = SqliteSink(older), ItemKey("post", 3)
    try:
        for batch in (
            [ItemCheckpoint(key, 3, liked(range(3)), (), {}, None)],
            [ItemCheckpoint(key, 1, {}, [0, 1], {}, None)],
            [ItemCheckpoint(key, 2, liked(range(1, 2), T0 + 5), (), {}, None)],  # a re-like
        ):
            await sink.write(batch)
        assert await sink.read_item(key) == (2, {1, 2})
    finally:
        await sink.close()
    with closing(sqlite3.connect(older)) as db:
        assert db.execute("SELECT COUNT(*) FROM like_records").fetchone() == (3,)  # no duplicate rows


async def test_like_records_has_the_schema_the_like_services_use(
    mysql_sink: MysqlSink, mysql_database: MysqlDatabase
) -> None:
    columns = await mysql_database.raw.query(
        "SELECT column_name, column_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'like_records' ORDER BY ordinal_position"
    )
    # MariaDB shows integer display widths ("bigint(20)"), MySQL 8 does not.
    assert [
        (str(name), re.sub(r"int\(\d+\)", "int", str(kind)), str(null)) for name, kind, null, _ in columns
    ] == [
        ("id", "bigint", "NO"),
        ("user_id", "bigint unsigned", "NO"),
        ("content_id", "bigint unsigned", "NO"),
        ("content_type", "varchar(20)", "NO"),
        ("created_at", "datetime(3)", "NO"),
        ("updated_at", "datetime(3)", "NO"),
        ("is_canceled", "tinyint", "NO"),
    ]
    indexes = await mysql_database.raw.query(
        "SELECT index_name, non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index)"
        " FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'like_records'"
        " GROUP BY index_name, non_unique"
    )
    assert sorted((str(name), int(non_unique), str(cols)) for name, non_unique, cols in indexes) == [
        ("PRIMARY", 0, "id"),
        ("idx_content", 1, "content_id,content_type"),
        ("uk_user_content", 0, "user_id,content_id,content_type"),
    ]


async def test_mysql_keeps_the_first_like_as_created_at_and_cancels_logically(
    mysql_sink: MysqlSink, mysql_database: MysqlDatabase
) -> None:
    key = ItemKey("post", 1)
    await mysql_sink.write([ItemCheckpoint(key, 1, {9: 1_700_000_000_123}, (), {}, None)])
    await mysql_sink.write([ItemCheckpoint(key, 0, {}, (9,), {}, None)])
    await mysql_sink.write([ItemCheckpoint(key, 1, {9: 1_700_000_999_000}, (), {}, None)])
    rows = await mysql_database.raw.query(
        "SELECT CAST(created_at AS CHAR), CAST(updated_at AS CHAR), is_canceled FROM like_records"
    )
    assert rows == [("2023-11-14 22:13:20.123", "2023-11-14 22:29:59.000", 0)]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1/0",
        "mysql://127.0.0.1:3306/test",
        "mysql://root@127.0.0.1:3306/",
        "mysql://root@h/a/b",
    ],
)
def test_a_malformed_mysql_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="mysql://user"):
        MysqlSink(url)


async def test_an_unreachable_server_is_reported_not_waited_for() -> None:
    with socket.socket() as holder:  # bound, never listening: connecting is refused
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        for sink in (
            MysqlSink(f"mysql://root@127.0.0.1:{port}/test", timeout=0.5),
            RedisSink(f"redis://127.0.0.1:{port}/0", timeout=0.5),
        ):
            with pytest.raises(SinkUnavailable):
                await sink.open()
            with pytest.raises(SinkUnavailable):
                await sink.write([ItemCheckpoint(ItemKey("post", 1), 0, {}, (), {}, None)])
            await sink.close()
