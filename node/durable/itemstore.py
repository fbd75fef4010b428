"""The item store: every item's state on this node's disk, so the log can be truncated.

One SQLite file beside the log segments, ``items.db``:

    items (key BLOB PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID
    meta  (name TEXT PRIMARY KEY, value INTEGER NOT NULL): ``format`` and ``covered``

A stored state is the item's payload after a CRC-32 of key and payload (4 bytes, big-endian): SQLite
checks its pages' structure (``quick_check`` at open) but not the bytes in them, and a flipped byte in
a state must stop a start as a damaged log snapshot did, not become another valid state.

``covered`` is the last log segment whose records are all in the store. A flush (``begin``, ``put``
per slice, ``commit``) writes only the items changed since the last one and moves ``covered`` in the
same transaction; the caller deletes the segments it covers after ``commit``. A start reads the
store, then replays only the segments after ``covered``: what a restart replays is the log's tail,
and what a clean stop writes is what changed since the last flush, whatever the number of items.

SQLite rather than LMDB or RocksDB: it ships with Python (no binding to keep building), its B-tree
without rowid stores a small state next to its key, one transaction writes a flush of any size
atomically, and a start scans it at about a million rows a second (``python -m bench longtail``).
The file runs in WAL mode with ``synchronous=FULL``: a returned ``commit`` survives power loss, and
only then are log segments deleted. ``quick_check`` at open finds a damaged file before anything
is read from it. The connection is used by one worker thread at a time (``_call``); start-up reads
run before the event loop serves.

``format`` is the layout's version: a file of a newer format is refused, never misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from node.errors import DataDirError

Pair = tuple[bytes, bytes]

FILE = "items.db"
#: The layout this module writes and reads.
FORMAT = 1
#: Bytes SQLite's own log keeps on disk between flushes (a flush of many items grows it past that).
WAL_LIMIT = 8 * 1024 * 1024
#: Rows per fetch while a start reads the store.
READ_ROWS = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (key BLOB PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_PUT = "INSERT OR REPLACE INTO items (key, state) VALUES (?, ?)"
_SET = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"


class DamagedStore(DataDirError):
    """The item store cannot be read: damaged, not an item store, or written by a newer version."""


class ItemStore:
    """The item store of one node's log directory. ``open`` it before anything else."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self._db: sqlite3.Connection | None = None
        #: The event loop's connection for point reads (``state``).
        self._reader: sqlite3.Connection | None = None
        #: One connection, used by one thread at a time; a thread lock, so a cancelled caller never
        #: lets the next call in while its thread still runs.
        self._lock = threading.Lock()
        #: The last segment the store covers, as committed.
        self.covered = 0
        #: Flushes committed and items written since start, for metrics.
        self.flushes = 0
        self.items_written = 0
        #: Keys of rows that failed their checksum and were left out (``discard_damaged``), to delete:
        #: at once at start (``drop_damaged``), else by the next flush, which is the store's writer.
        self.damaged: list[object] = []
        self._deleting: list[object] = []

    # -- start-up (blocking, before the event loop serves) ----------------------------------------

    def open(self) -> int:
        """Open or create the file and check it; the last log segment it covers (0 when new).
        DamagedStore if it cannot be trusted."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0  # 0: died as it was created
        meta = {} if fresh else self._check()
        try:
            db = self._connect()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            if not meta:
                create = f"BEGIN IMMEDIATE; {_SCHEMA} INSERT INTO meta VALUES ('format', {FORMAT}); COMMIT;"
                db.executescript(create)
        except sqlite3.Error as exc:
            raise DamagedStore(f"{self.path}: {exc}") from exc
        self._db = db
        self.covered = int(meta.get("covered", 0))
        return self.covered

    def _check(self) -> dict[str, int]:
        """Check an existing file through a read-only connection (closing a writable one would copy
        SQLite's log into a damaged file before it could be set aside as found); its meta rows."""
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                (verdict,) = db.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise DamagedStore(f"{self.path}: damaged ({verdict})")
                meta = {str(name): value for name, value in db.execute("SELECT name, value FROM meta")}
        except sqlite3.Error as exc:
            raise DamagedStore(f"{self.path}: not an item store this version reads ({exc})") from exc
        written = meta.get("format")
        if written != FORMAT:
            raise DamagedStore(f"{self.path}: format {written}, not {FORMAT}: not one this version reads")
        return meta

    def set_aside(self) -> str:
        """Rename a damaged file (and SQLite's own log beside it) aside, never to be read again; the
        name it got. ``open`` then starts an empty store."""
        self.close()
        aside = self.path.with_name(f"{FILE}.damaged-{int(time.time())}")
        while aside.exists():
            aside = aside.with_name(aside.name + "+")
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        return aside.name

    def states(self, *, discard_damaged: bool = False) -> Iterator[Pair]:
        """Every stored (key, state), in key order, through a connection of its own (so it can be
        read on in a worker thread while flushes commit). A state failing its checksum raises
        DamagedStore, or with ``discard_damaged`` is left out and its key noted in ``damaged``."""
        try:
            with contextlib.closing(self._connect(read_only=True)) as db:
                cursor = db.execute("SELECT key, state FROM items")
                while rows := cursor.fetchmany(READ_ROWS):
                    for key, stored in rows:
                        state = _checked(key, stored)
                        if state is not None:
                            yield key, state
                        elif discard_damaged:
                            self.damaged.append(key)
                        else:
                            raise DamagedStore(f"{self.path}: the state of item {key!r} fails its checksum")
        except sqlite3.Error as exc:
            raise DamagedStore(f"{self.path}: {exc}") from exc

    def state(self, key: bytes) -> bytes | None:
        """The stored state of one item (None if the store has none): a point read through a
        connection of its own, for the event loop while the rest is still being read in. A state
        failing its checksum raises DamagedStore."""
        if self._reader is None:
            self._reader = self._connect(read_only=True)
        try:
            row = self._reader.execute("SELECT state FROM items WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise DamagedStore(f"{self.path}: {exc}") from exc
        if row is None:
            return None
        state = _checked(key, row[0])
        if state is None:
            raise DamagedStore(f"{self.path}: the state of item {key!r} fails its checksum")
        return state

    def drop_damaged(self) -> None:
        """Delete the rows in ``damaged`` now (at start, before any flush runs)."""
        db = self._open_db()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            _delete(db, self.damaged)
            db.execute("COMMIT")
        self.damaged = []

    def __len__(self) -> int:
        (count,) = self._open_db().execute("SELECT count(*) FROM items").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the file (waiting for a call in progress)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        target = f"file:{self.path}?mode=ro" if read_only else f"file:{self.path}"
        db = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
        db.text_factory = bytes  # a flipped bit can make a blob read back as text: bytes, checked
        return db

    # -- flushes (each call in a worker thread) --------------------------------------------------

    async def begin(self) -> None:
        """Start a flush's transaction; it also deletes the damaged rows found since start (before
        any state is written, so an item liked again since is written whole)."""
        damaged = list(self.damaged)

        def begin(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            _delete(db, damaged)

        await self._call(begin)
        self._deleting = damaged

    async def put(self, pairs: Sequence[Pair]) -> None:
        """Write ``(key, state)`` pairs inside the flush's transaction."""
        if pairs:
            rows = [(key, _crc(key, state) + state) for key, state in pairs]
            await self._call(lambda db: db.executemany(_PUT, rows))

    async def commit(self, covered: int, items: int) -> None:
        """End the flush: the store now holds every record of the segments up to ``covered``, durably
        once this returns."""

        def commit(db: sqlite3.Connection) -> None:
            db.execute(_SET, ("covered", covered))
            db.execute("COMMIT")

        await self._call(commit)
        deleted, self._deleting = self._deleting, []
        self.damaged = [key for key in self.damaged if key not in deleted]
        self.covered = covered
        self.flushes += 1
        self.items_written += items

    async def rollback(self) -> None:
        """Abandon the flush in progress, if any (SQLite may have rolled it back itself)."""

        def rollback(db: sqlite3.Connection) -> None:
            if db.in_transaction:
                db.execute("ROLLBACK")

        await self._call(rollback)

    def size_bytes(self) -> int:
        """Bytes of the store on disk, SQLite's own log included."""
        total = 0
        for name in (self.path, f"{self.path}-wal"):
            with contextlib.suppress(OSError):  # absent, or its directory gone from under it
                total += os.stat(name).st_size
        return total

    async def _call(self, work: Callable[[sqlite3.Connection], object]) -> None:
        def run() -> None:
            with self._lock:
                work(self._open_db())

        try:
            await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise DataDirError(f"{self.path}: {exc}") from exc

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise DataDirError(f"{self.path}: the item store is not open")
        return self._db


def _checked(key: object, stored: object) -> bytes | None:
    """The state of a stored row, or None if the row fails its checksum (a flipped bit in a row's
    header can even make a blob read back as text or a number)."""
    if type(key) is not bytes or type(stored) is not bytes:
        return None
    state = stored[4:]
    return state if _crc(key, state) == stored[:4] else None


def _crc(key: bytes, state: bytes) -> bytes:
    """The 4 bytes a stored state starts with: CRC-32 of key and state, big-endian."""
    return zlib.crc32(state, zlib.crc32(key)).to_bytes(4, "big")


def _delete(db: sqlite3.Connection, keys: Sequence[object]) -> None:
    # CAST: a key whose type a flipped bit changed compares equal to no blob.
    db.executemany("DELETE FROM items WHERE CAST(key AS BLOB) = ?", ((key,) for key in keys))
