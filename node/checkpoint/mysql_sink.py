"""The MySQL sink: ``like_records`` for "my likes" and history, plus every item's state for recovery.

Schema (created on open if missing):

    like_records            exactly as the existing like services keep it: one row per (user, item),
                            ``is_canceled`` the logical delete, ``created_at`` the first like.
    like_item_state         (content_type, content_id) PRIMARY KEY: like_count, the state's size,
                            chunk count and SHA-256, updated_at.
    like_item_state_chunks  (content_type, content_id, seq) PRIMARY KEY, data MEDIUMBLOB <= 1 MiB:
                            the serialized state (``node.state.item.encode_item``) in pieces, because a
                            1,000,000-like item (~15 MB) does not fit in one ``max_allowed_packet``.
    like_counters           (content_type, content_id, name) PRIMARY KEY: each counter's value.

Ids are BIGINT UNSIGNED: content and user ids are unsigned 64-bit. Times are DATETIME(3) in UTC.

Idempotence: liked users go in as multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` (a re-like
clears ``is_canceled`` and keeps ``created_at``; a like already live is left alone), cancels only
touch rows not yet canceled, and item and counter rows take the batch's values. A batch is one
transaction, except that a huge item commits its ``like_records`` every ``COMMIT_ROWS`` rows; a
state's chunks and its ``like_item_state`` row always change in one transaction, so a restore never
sees half a state, and the stored SHA-256 proves it whole.

Every statement and every connect runs under ``timeout``; a connection that failed or timed out is
closed (the server rolls its transaction back) together with every idle one, and the next call
connects afresh, so the sink recovers by itself once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
from asyncmy.errors import MySQLError

from node.checkpoint.records import chunks, flat, new_like_times, now_ms, record_changes, sql_time
from node.checkpoint.sink import DEFAULT_TIMEOUT, ItemCheckpoint
from node.errors import SinkDataError, SinkUnavailable
from node.state.item import ItemKey

#: ``like_records`` exactly as existing like services keep it (the benchmark's peers create it too).
LIKE_RECORDS_DDL = """CREATE TABLE IF NOT EXISTS like_records (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        user_id BIGINT UNSIGNED NOT NULL,
        content_id BIGINT UNSIGNED NOT NULL,
        content_type VARCHAR(20) NOT NULL,
        created_at DATETIME(3) NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        is_canceled TINYINT NOT NULL DEFAULT 0,
        UNIQUE KEY uk_user_content (user_id, content_id, content_type),
        KEY idx_content (content_id, content_type)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
_SCHEMA = (
    LIKE_RECORDS_DDL,
    """CREATE TABLE IF NOT EXISTS like_item_state (
        content_type VARCHAR(20) NOT NULL,
        content_id BIGINT UNSIGNED NOT NULL,
        like_count BIGINT UNSIGNED NOT NULL,
        state_bytes BIGINT UNSIGNED NULL,
        state_chunks INT UNSIGNED NULL,
        state_sha256 BINARY(32) NULL,
        updated_at DATETIME(3) NOT NULL,
        PRIMARY KEY (content_type, content_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS like_item_state_chunks (
        content_type VARCHAR(20) NOT NULL,
        content_id BIGINT UNSIGNED NOT NULL,
        seq INT UNSIGNED NOT NULL,
        data MEDIUMBLOB NOT NULL,
        PRIMARY KEY (content_type, content_id, seq)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS like_counters (
        content_type VARCHAR(20) NOT NULL,
        content_id BIGINT UNSIGNED NOT NULL,
        name VARCHAR(20) NOT NULL,
        value BIGINT NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        PRIMARY KEY (content_type, content_id, name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

# MySQL applies ON DUPLICATE KEY assignments left to right: updated_at must read is_canceled first.
_UPSERT_LIKES = (
    "INSERT INTO like_records (user_id, content_id, content_type, created_at, updated_at) VALUES {rows} "
    "ON DUPLICATE KEY UPDATE updated_at = IF(is_canceled = 0, updated_at, VALUES(updated_at)), "
    "is_canceled = 0"
)
_CANCEL = (
    "UPDATE like_records SET is_canceled = 1, updated_at = %s "
    "WHERE content_id = %s AND content_type = %s AND is_canceled = 0 AND user_id IN ({users})"
)
_ACTIVE_PAGE = (
    "SELECT id, user_id FROM like_records "
    "WHERE content_id = %s AND content_type = %s AND is_canceled = 0 AND id > %s ORDER BY id LIMIT %s"
)
_UPSERT_ITEMS = (
    "INSERT INTO like_item_state "
    "(content_type, content_id, like_count, state_bytes, state_chunks, state_sha256, updated_at) "
    "VALUES {rows} ON DUPLICATE KEY UPDATE like_count = VALUES(like_count), "
    "state_bytes = COALESCE(VALUES(state_bytes), state_bytes), "
    "state_chunks = COALESCE(VALUES(state_chunks), state_chunks), "
    "state_sha256 = COALESCE(VALUES(state_sha256), state_sha256), updated_at = VALUES(updated_at)"
)
_UPSERT_COUNTERS = (
    "INSERT INTO like_counters (content_type, content_id, name, value, updated_at) VALUES {rows} "
    "ON DUPLICATE KEY UPDATE updated_at = IF(value = VALUES(value), updated_at, VALUES(updated_at)), "
    "value = VALUES(value)"
)
_DELETE_CHUNKS = "DELETE FROM like_item_state_chunks WHERE {items}"
_INSERT_CHUNKS = "INSERT INTO like_item_state_chunks (content_type, content_id, seq, data) VALUES {rows}"
_STATES_PAGE = (
    "SELECT content_type, content_id, state_bytes, state_chunks, state_sha256 FROM like_item_state "
    "WHERE state_bytes IS NOT NULL AND (content_type > %s OR (content_type = %s AND content_id > %s)) "
    "ORDER BY content_type, content_id LIMIT %s"
)
_CHUNKS_OF = "SELECT content_type, content_id, seq, data FROM like_item_state_chunks WHERE {items}"
_ITEM = "(content_type = %s AND content_id = %s)"

#: Rows per multi-row statement: a few hundred keeps each statement well inside the timeout.
ROWS_PER_STATEMENT = 500
#: Rows of one huge item's ``like_records`` changed per transaction.
COMMIT_ROWS = 20_000
#: Largest piece of a state, in bytes. MEDIUMBLOB holds 16 MiB, but a piece travels as hex (2 MiB for
#: 1 MiB), which must stay under ``max_allowed_packet`` (4 MiB by default on MySQL 5.7, more since).
STATE_CHUNK_BYTES = 1 << 20
#: Payload of one statement that writes or reads state chunks, in bytes (one chunk may exceed it).
STATE_STATEMENT_BYTES = 1 << 20
#: Chunks per query when reading a state larger than ``STATE_STATEMENT_BYTES``.
BIG_STATE_CHUNKS_PER_QUERY = 4
#: Items per transaction, and state bytes per transaction before a new one starts.
ITEMS_PER_TRANSACTION = 500
STATE_BYTES_PER_TRANSACTION = 8 << 20
#: Users fetched per page when comparing a full checkpoint with the stored likes.
ACTIVE_PAGE_ROWS = 10_000
#: States described per ``load_states`` query.
STATES_PER_PAGE = 256
#: An idle connection older than this is pinged before use (the server may have dropped it).
IDLE_PING_AFTER = 10.0

#: What a driver or network failure looks like; all of it becomes SinkUnavailable.
_FAILURES = (MySQLError, OSError, TimeoutError)

_Row = tuple[Any, ...]


class MysqlSink:
    """Checkpoints into MySQL or MariaDB: like_records, counters and chunked states."""

    name = "mysql"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, pool_size: int = 2) -> None:
        """``url``: ``mysql://user[:password]@host[:port]/database`` (ValueError if malformed).

        ``timeout`` bounds each connect and each statement, in seconds. ``pool_size`` caps the
        connections: writes take one at a time, ``load_states`` holds one for its whole run.
        """
        parts = urlsplit(url)
        database = unquote(parts.path.removeprefix("/"))
        if parts.scheme != "mysql" or not parts.username or not database or "/" in database:
            raise ValueError("mysql sink: expected a url like mysql://user[:password]@host[:port]/database")
        if timeout <= 0 or pool_size < 1:
            raise ValueError("mysql sink: timeout must be > 0 and pool_size >= 1")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 3306
        self._user = unquote(parts.username)
        self._password = unquote(parts.password or "")
        self._database = database
        self._timeout = timeout
        #: For messages: the url without its password.
        self._where = f"mysql://{self._user}@{self._host}:{self._port}/{database}"
        self._slots = asyncio.Semaphore(pool_size)
        #: Connections not in use, with when they were last returned.
        self._idle: list[tuple[asyncmy.Connection, float]] = []
        #: Batches go one at a time, so two batches of one item never interleave.
        self._write_lock = asyncio.Lock()
        self._schema_ready = False
        self._closed = False

    async def open(self) -> None:
        """Connect once and create the tables if missing."""
        async with self._connection():
            pass

    async def write(self, batch: Sequence[ItemCheckpoint]) -> None:
        """Apply ``batch``: one transaction per group of items (see the module docstring)."""
        if not batch:
            return
        now = sql_time(now_ms())
        async with self._write_lock, self._connection() as conn:
            for group in _groups(batch):
                await self._write_group(conn, group, now)

    async def close(self) -> None:
        """Close the idle connections (one in use closes when returned); later calls raise SinkUnavailable."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            try:
                with contextlib.suppress(*_FAILURES):
                    async with asyncio.timeout(self._timeout):
                        await conn.ensure_closed()  # QUIT, so the server need not log an aborted connection
            finally:
                conn.close()

    async def read_item(self, key: ItemKey) -> tuple[int, set[int]]:
        """The stored count and the users whose like_records row is not canceled."""
        async with self._connection() as conn:
            rows = await self._query(
                conn,
                "SELECT like_count FROM like_item_state WHERE content_type = %s AND content_id = %s",
                (key.content_type, key.content_id),
            )
            return (int(rows[0][0]) if rows else 0), await self._active(conn, key)

    async def load_states(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Every stored state with its item key, all from one consistent snapshot."""
        async with self._connection() as conn:
            await self._execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await self._execute(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            after = ItemKey("", 0)
            while True:
                page = await self._query(
                    conn,
                    _STATES_PAGE,
                    (after.content_type, after.content_type, after.content_id, STATES_PER_PAGE),
                )
                for group in _state_reads(page):
                    states = await self._read_states(conn, group)
                    for row in group:
                        key = ItemKey(row[0], int(row[1]))
                        yield key.to_bytes(), _reassembled(key, states.get(key, []), row)
                if len(page) < STATES_PER_PAGE:
                    break
                after = ItemKey(page[-1][0], int(page[-1][1]))
            async with asyncio.timeout(self._timeout):
                await conn.rollback()

    # -- writing -----------------------------------------------------------------------------------

    async def _write_group(self, conn: asyncmy.Connection, group: Sequence[ItemCheckpoint], now: str) -> None:
        uncommitted = 0
        for checkpoint in group:
            key = checkpoint.key
            active = await self._active(conn, key) if checkpoint.full else None
            changes = record_changes(checkpoint, active)
            for likes in chunks(changes.likes, ROWS_PER_STATEMENT):
                rows = [(user, key.content_id, key.content_type, *new_like_times(at)) for user, at in likes]
                await self._execute(conn, _UPSERT_LIKES.format(rows=_placeholders(len(rows), 5)), flat(rows))
                uncommitted = await self._commit_every(conn, uncommitted + len(rows))
            for users in chunks(changes.cancels, ROWS_PER_STATEMENT):
                sql = _CANCEL.format(users=", ".join(["%s"] * len(users)))
                await self._execute(conn, sql, (now, key.content_id, key.content_type, *users))
                uncommitted = await self._commit_every(conn, uncommitted + len(users))
        await self._replace_states(conn, [c for c in group if c.state is not None])
        for items in chunks(group, ROWS_PER_STATEMENT):
            rows = [_item_row(checkpoint, now) for checkpoint in items]
            await self._execute(conn, _UPSERT_ITEMS.format(rows=_placeholders(len(rows), 7)), flat(rows))
        counters = [
            (c.key.content_type, c.key.content_id, name, value, now)
            for c in group
            for name, value in sorted(c.counters.items())
        ]
        for values in chunks(counters, ROWS_PER_STATEMENT):
            sql = _UPSERT_COUNTERS.format(rows=_placeholders(len(values), 5))
            await self._execute(conn, sql, flat(values))
        async with asyncio.timeout(self._timeout):
            await conn.commit()

    async def _commit_every(self, conn: asyncmy.Connection, uncommitted: int) -> int:
        """Commit once a huge item has changed ``COMMIT_ROWS`` rows; the rows still uncommitted."""
        if uncommitted < COMMIT_ROWS:
            return uncommitted
        async with asyncio.timeout(self._timeout):
            await conn.commit()
        return 0

    async def _replace_states(self, conn: asyncmy.Connection, checkpoints: Sequence[ItemCheckpoint]) -> None:
        """Swap in the new chunks of these states (committed with their item rows, by the caller)."""
        for items in chunks(checkpoints, ROWS_PER_STATEMENT):
            sql = _DELETE_CHUNKS.format(items=" OR ".join([_ITEM] * len(items)))
            await self._execute(conn, sql, flat((c.key.content_type, c.key.content_id) for c in items))
        pending: list[tuple[str, int, int, bytes]] = []
        size = 0
        for checkpoint in checkpoints:
            assert checkpoint.state is not None
            for seq, piece in enumerate(_pieces(checkpoint.state)):
                if pending and (
                    size + len(piece) > STATE_STATEMENT_BYTES or len(pending) >= ROWS_PER_STATEMENT
                ):
                    await self._insert_chunks(conn, pending)
                    pending, size = [], 0
                pending.append((checkpoint.key.content_type, checkpoint.key.content_id, seq, piece))
                size += len(piece)
        if pending:
            await self._insert_chunks(conn, pending)

    async def _insert_chunks(
        self, conn: asyncmy.Connection, rows: Sequence[tuple[str, int, int, bytes]]
    ) -> None:
        # The data goes in as hex literals: the driver escapes a large bytes value far more slowly than
        # bytes.hex() encodes it, and hex digits need no escaping at all.
        values = ", ".join(f"(%s, %s, %s, X'{data.hex()}')" for *_, data in rows)
        await self._execute(conn, _INSERT_CHUNKS.format(rows=values), flat(row[:3] for row in rows))

    # -- reading -----------------------------------------------------------------------------------

    async def _active(self, conn: asyncmy.Connection, key: ItemKey) -> set[int]:
        """The users with a live like of ``key``, a page at a time (an item may have millions)."""
        users: set[int] = set()
        last_id = 0
        while True:
            rows = await self._query(
                conn, _ACTIVE_PAGE, (key.content_id, key.content_type, last_id, ACTIVE_PAGE_ROWS)
            )
            users.update(int(user) for _, user in rows)
            if len(rows) < ACTIVE_PAGE_ROWS:
                return users
            last_id = int(rows[-1][0])

    async def _read_states(
        self, conn: asyncmy.Connection, group: Sequence[_Row]
    ) -> dict[ItemKey, list[bytes]]:
        """The chunks of the states described by ``group``, in order, about a statement's worth at a time."""
        found: dict[ItemKey, list[bytes]] = {}
        if len(group) == 1 and int(group[0][2]) > STATE_STATEMENT_BYTES:
            # One big state: a few chunks per query, so no result set is larger than a few MiB.
            key = ItemKey(group[0][0], int(group[0][1]))
            step = BIG_STATE_CHUNKS_PER_QUERY
            for first in range(0, int(group[0][3]), step):
                rows = await self._query(
                    conn,
                    _CHUNKS_OF.format(items=_ITEM) + " AND seq >= %s AND seq < %s ORDER BY seq",
                    (key.content_type, key.content_id, first, first + step),
                )
                found.setdefault(key, []).extend(bytes(row[3]) for row in rows)
            return found
        sql = (
            _CHUNKS_OF.format(items=" OR ".join([_ITEM] * len(group)))
            + " ORDER BY content_type, content_id, seq"
        )
        for row in await self._query(conn, sql, flat((row[0], row[1]) for row in group)):
            found.setdefault(ItemKey(row[0], int(row[1])), []).append(bytes(row[3]))
        return found

    # -- connections -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncmy.Connection]:
        """A pooled connection; any failure becomes SinkUnavailable and drops every idle connection."""
        if self._closed:
            raise SinkUnavailable(f"{self._where}: the sink is closed")
        async with self._slots:
            conn: asyncmy.Connection | None = None
            try:
                conn = await self._checkout()
                yield conn
                if conn.get_transaction_status():  # a read left a snapshot open: end it before reuse
                    async with asyncio.timeout(self._timeout):
                        await conn.rollback()
            except _FAILURES as exc:
                self._drop(conn)
                raise SinkUnavailable(f"{self._where}: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                self._drop(conn)
                raise
            if self._closed:
                conn.close()
            else:
                self._idle.append((conn, time.monotonic()))

    async def _checkout(self) -> asyncmy.Connection:
        """An idle connection that still works, or a new one (with the schema ensured)."""
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.connected:
                conn.close()
                continue
            if time.monotonic() - since < IDLE_PING_AFTER:
                return conn
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.ping(reconnect=False)
            except _FAILURES:
                conn.close()
                continue
            return conn
        conn = await self._connect()
        if not self._schema_ready:
            try:
                # Without notes: "table already exists" would be logged as a warning on every start.
                await self._execute(conn, "SET SESSION sql_notes = 0")
                for statement in _SCHEMA:
                    await self._execute(conn, statement)
                await self._execute(conn, "SET SESSION sql_notes = 1")
                async with asyncio.timeout(self._timeout):
                    await conn.commit()
            except BaseException:
                conn.close()
                raise
            self._schema_ready = True
        return conn

    async def _connect(self) -> asyncmy.Connection:
        async with asyncio.timeout(self._timeout):
            conn = await asyncmy.connect(
                host=self._host,
                port=self._port,
                user=self._user,
                password=self._password,
                database=self._database,
                charset="utf8mb4",
                autocommit=False,
                connect_timeout=self._timeout,
                # States are bytes: send them as _binary literals, never as text of the connection charset.
                binary_prefix=True,
            )
            try:
                for statement in self._session_settings(conn):
                    await self._execute(conn, statement)
            except BaseException:
                conn.close()
                raise
        return conn

    def _session_settings(self, conn: asyncmy.Connection) -> Iterator[str]:
        # Upserts need no repeatable snapshot, and READ COMMITTED takes no gap locks: fewer deadlocks
        # when two owners briefly write one item during a membership change.
        yield "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
        # A lock wait beyond our own timeout only keeps a server thread busy after we have given up.
        yield f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(self._timeout))}"
        if "mariadb" in str(conn.get_server_info()).lower():
            # A client lost mid-transaction (a partition) would hold its row locks until wait_timeout
            # (8 h by default), failing every retry meanwhile; MariaDB can end such a transaction.
            yield f"SET SESSION idle_write_transaction_timeout = {max(10, math.ceil(5 * self._timeout))}"

    def _drop(self, conn: asyncmy.Connection | None) -> None:
        """Close a failed connection and every idle one: after a failure they are suspect too."""
        if conn is not None:
            conn.close()
        idle, self._idle = self._idle, []
        for other, _ in idle:
            other.close()

    async def _execute(self, conn: asyncmy.Connection, sql: str, args: Sequence[Any] | None = None) -> None:
        async with asyncio.timeout(self._timeout), conn.cursor() as cursor:
            await cursor.execute(sql, args)

    async def _query(
        self, conn: asyncmy.Connection, sql: str, args: Sequence[Any] | None = None
    ) -> list[_Row]:
        async with asyncio.timeout(self._timeout), conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())


def _placeholders(rows: int, columns: int) -> str:
    row = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([row] * rows)


def _pieces(state: bytes) -> Iterator[bytes]:
    view = memoryview(state)
    for start in range(0, len(state), STATE_CHUNK_BYTES):
        yield bytes(view[start : start + STATE_CHUNK_BYTES])


def _item_row(checkpoint: ItemCheckpoint, now: str) -> tuple[Any, ...]:
    key, state = checkpoint.key, checkpoint.state
    if state is None:  # NULLs keep the stored state (COALESCE in the upsert)
        return (key.content_type, key.content_id, checkpoint.count, None, None, None, now)
    pieces = math.ceil(len(state) / STATE_CHUNK_BYTES)
    digest = hashlib.sha256(state).digest()
    return (key.content_type, key.content_id, checkpoint.count, len(state), pieces, digest, now)


def _groups(batch: Sequence[ItemCheckpoint]) -> Iterator[Sequence[ItemCheckpoint]]:
    """Consecutive slices of the batch, each written in one transaction."""
    start = rows = state_bytes = 0
    for index, checkpoint in enumerate(batch):
        size = len(checkpoint.liked) + len(checkpoint.unliked)
        state_size = 0 if checkpoint.state is None else len(checkpoint.state)
        crowded = index - start >= ITEMS_PER_TRANSACTION
        if index > start and (
            crowded or rows + size > COMMIT_ROWS or state_bytes + state_size > STATE_BYTES_PER_TRANSACTION
        ):
            yield batch[start:index]
            start, rows, state_bytes = index, 0, 0
        rows += size
        state_bytes += state_size
    if start < len(batch):
        yield batch[start:]


def _state_reads(page: Sequence[_Row]) -> Iterator[Sequence[_Row]]:
    """Runs of states whose chunks one query can fetch; a state above the budget goes alone."""
    run: list[_Row] = []
    size = 0
    for row in page:
        row_size = int(row[2])
        if run and (size + row_size > STATE_STATEMENT_BYTES or len(run) >= ROWS_PER_STATEMENT):
            yield run
            run, size = [], 0
        run.append(row)
        size += row_size
    if run:
        yield run


def _reassembled(key: ItemKey, pieces: Sequence[bytes], row: _Row) -> bytes:
    """The state from its chunks; SinkDataError unless size, chunk count and SHA-256 all match."""
    state = b"".join(pieces)
    size, count, digest = int(row[2]), int(row[3]), bytes(row[4])
    if len(pieces) != count or len(state) != size or hashlib.sha256(state).digest() != digest:
        raise SinkDataError(f"mysql: the stored state of {key} is incomplete or altered")
    return state
