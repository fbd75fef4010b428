"""The embedded default sink: one SQLite file in the data dir holding what MySQL would.

Schema (created on open; the same tables and columns as ``mysql_sink``, so either answers the same
questions and a node can move from one to the other):

    like_records     (id, user_id, content_id, content_type, created_at, updated_at, is_canceled)
                     UNIQUE uk_user_content (content_id, content_type, user_id)
    like_item_state  (content_type, content_id) PRIMARY KEY, like_count, state BLOB, updated_at
    like_counters    (content_type, content_id, name) PRIMARY KEY, value, updated_at

Differences forced by SQLite: integers are signed 64-bit, so an id at or above 2**63 is stored as
its two's complement (``id - 2**64``) and read back unsigned; times are DATETIME(3)-style UTC text;
a state is one BLOB (no packet limit to chunk around). Not forced, but cheaper: the unique key leads
with the item, so it also answers MySQL's ``idx_content`` lookups and a row costs two B-trees, not
three. The conflict target of an upsert is the same columns in any order, so a file made with MySQL's
keys works unchanged.

Idempotence: liked users are upserted (a canceled row is revived, ``created_at`` keeps the first
like), cancels only touch rows not yet canceled, item and counter rows are overwritten with the
values of the batch, and the whole batch is one transaction. The file runs in WAL mode with
``synchronous=FULL``: a write that returned survives a crash. sqlite3 blocks, so every call runs
in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from node.checkpoint.records import new_like_times, now_ms, record_changes, sql_time
from node.checkpoint.sink import DEFAULT_TIMEOUT, ItemCheckpoint
from node.errors import SinkUnavailable
from node.state.item import ItemKey

_R = TypeVar("_R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS like_records (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    content_id INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    is_canceled INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT uk_user_content UNIQUE (content_id, content_type, user_id)
);
CREATE TABLE IF NOT EXISTS like_item_state (
    content_type TEXT NOT NULL,
    content_id INTEGER NOT NULL,
    like_count INTEGER NOT NULL,
    state BLOB,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (content_type, content_id)
);
CREATE TABLE IF NOT EXISTS like_counters (
    content_type TEXT NOT NULL,
    content_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (content_type, content_id, name)
);
"""

_UPSERT_LIKE = """
INSERT INTO like_records (user_id, content_id, content_type, created_at, updated_at, is_canceled)
VALUES (?, ?, ?, ?, ?, 0)
ON CONFLICT (user_id, content_id, content_type) DO UPDATE SET
    updated_at = CASE WHEN is_canceled = 0 THEN updated_at ELSE excluded.updated_at END,
    is_canceled = 0
"""
_CANCEL = """
UPDATE like_records SET is_canceled = 1, updated_at = ?
WHERE user_id = ? AND content_id = ? AND content_type = ? AND is_canceled = 0
"""
_ACTIVE = "SELECT user_id FROM like_records WHERE content_id = ? AND content_type = ? AND is_canceled = 0"
_UPSERT_ITEM = """
INSERT INTO like_item_state (content_type, content_id, like_count, state, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (content_type, content_id) DO UPDATE SET
    like_count = excluded.like_count,
    state = COALESCE(excluded.state, state),
    updated_at = excluded.updated_at
"""
_UPSERT_COUNTER = """
INSERT INTO like_counters (content_type, content_id, name, value, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (content_type, content_id, name) DO UPDATE SET
    updated_at = CASE WHEN value = excluded.value THEN updated_at ELSE excluded.updated_at END,
    value = excluded.value
"""
_STATES_PAGE = """
SELECT content_type, content_id, state FROM like_item_state
WHERE state IS NOT NULL AND (content_type, content_id) > (?, ?)
ORDER BY content_type, content_id LIMIT ?
"""
#: Items per ``load_states`` query: small enough to keep the thread hop short.
_STATES_PER_PAGE = 64
_SIGN = 1 << 63
_WRAP = 1 << 64


def _signed(value: int) -> int:
    """An unsigned 64-bit id as the signed integer SQLite can store."""
    return value - _WRAP if value >= _SIGN else value


def _unsigned(value: int) -> int:
    return value + _WRAP if value < 0 else value


class SqliteSink:
    """Checkpoints into a SQLite file (WAL mode); the default when no server is configured."""

    name = "sqlite"

    def __init__(self, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._path = path
        #: How long to wait for another connection's lock on the file (seconds).
        self._timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._closed = False
        #: One connection, used by one worker thread at a time. A thread lock rather than an asyncio
        #: one: a cancelled caller must not let the next call in while its thread still runs.
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Open (or create) the file, switch it to WAL and create the tables if missing."""
        await self._call(lambda db: None)

    async def write(self, batch: Sequence[ItemCheckpoint]) -> None:
        """Apply ``batch`` in one transaction."""
        if batch:
            await self._call(lambda db: self._write(db, batch))

    async def close(self) -> None:
        """Close the file; later calls raise SinkUnavailable."""

        def close() -> None:
            with self._lock:
                self._closed = True
                db, self._db = self._db, None
                if db is not None:
                    db.close()

        await asyncio.to_thread(close)

    async def read_item(self, key: ItemKey) -> tuple[int, set[int]]:
        """The stored count and the users with a live (not canceled) like."""
        return await self._call(lambda db: self._read_item(db, key))

    async def load_states(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Every stored state with its item key, a page of items per thread hop."""
        after = ItemKey("", 0)
        while True:
            rows = await self._call(partial(self._states_page, after=after))
            for key, state in rows:
                yield key.to_bytes(), state
            if len(rows) < _STATES_PER_PAGE:
                return
            after = rows[-1][0]

    # -- in the worker thread ----------------------------------------------------------------------

    async def _call(self, work: Callable[[sqlite3.Connection], _R]) -> _R:
        """Run ``work`` on the connection in a thread (opening it first if needed)."""

        def run() -> _R:
            with self._lock:
                if self._closed:
                    raise SinkUnavailable(f"sqlite {self._path}: the sink is closed")
                if self._db is None:
                    self._db = self._connect()
                return work(self._db)

        try:
            return await asyncio.to_thread(run)
        except (sqlite3.Error, OSError) as exc:
            raise SinkUnavailable(f"sqlite {self._path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun and ended explicitly, below.
        db = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _write(self, db: sqlite3.Connection, batch: Sequence[ItemCheckpoint]) -> None:
        now = sql_time(now_ms())
        db.execute("BEGIN IMMEDIATE")
        try:
            for checkpoint in batch:
                self._write_item(db, checkpoint, now)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (I/O error, full disk)
                db.execute("ROLLBACK")
            raise

    def _write_item(self, db: sqlite3.Connection, checkpoint: ItemCheckpoint, now: str) -> None:
        content_type, content_id = checkpoint.key.content_type, _signed(checkpoint.key.content_id)
        active = self._active(db, checkpoint.key) if checkpoint.full else None
        changes = record_changes(checkpoint, active)
        db.executemany(
            _UPSERT_LIKE,
            ((_signed(user), content_id, content_type, *new_like_times(at)) for user, at in changes.likes),
        )
        db.executemany(_CANCEL, ((now, _signed(user), content_id, content_type) for user in changes.cancels))
        db.execute(_UPSERT_ITEM, (content_type, content_id, checkpoint.count, checkpoint.state, now))
        db.executemany(
            _UPSERT_COUNTER,
            (
                (content_type, content_id, name, value, now)
                for name, value in sorted(checkpoint.counters.items())
            ),
        )

    @staticmethod
    def _active(db: sqlite3.Connection, key: ItemKey) -> set[int]:
        rows = db.execute(_ACTIVE, (_signed(key.content_id), key.content_type))
        return {_unsigned(user) for (user,) in rows}

    @staticmethod
    def _states_page(db: sqlite3.Connection, *, after: ItemKey) -> list[tuple[ItemKey, bytes]]:
        content_type, content_id = after.content_type, _signed(after.content_id)
        rows = db.execute(_STATES_PAGE, (content_type, content_id, _STATES_PER_PAGE))
        return [(ItemKey(name, _unsigned(number)), bytes(state)) for name, number, state in rows]

    def _read_item(self, db: sqlite3.Connection, key: ItemKey) -> tuple[int, set[int]]:
        row = db.execute(
            "SELECT like_count FROM like_item_state WHERE content_type = ? AND content_id = ?",
            (key.content_type, _signed(key.content_id)),
        ).fetchone()
        return (0 if row is None else int(row[0])), self._active(db, key)
