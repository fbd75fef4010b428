"""Peer 2, "the usual design": one Redis Lua call per like, MySQL written behind a queue.

This is how most like services are built today, written plainly:

- per like, one ``EVALSHA`` of a Lua script: ``HSETNX like:status:{type}:{id} user ms`` and, only if
  the user was new, ``INCR like:count:{type}:{id}``; it returns ``[changed, count]`` (so a user never
  counts twice, and the answer is atomic). ``redis.asyncio`` with its default connection pool, which
  opens a connection per concurrent call: it carries more likes per second than a
  ``BlockingConnectionPool`` of 32 does, so it is the fair choice;
- a newly liked row goes on an ``asyncio.Queue``; a background task wakes every 100 ms and drains the
  whole queue in multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` statements of up to 500 rows into
  ``like_records`` (the schema our MySQL sink and existing services use) through ``asyncmy``.

The answer does not wait for MySQL, and Redis here is whatever the server is configured for (the
local one keeps no AOF), so this peer acknowledges a like before anything is on disk, where our node
acknowledges after an fsync: the comparison flatters this peer, never ours. ``GET /stats`` reports
the queue's backlog and rows written, so the harness can say how far MySQL fell behind.

Everything lives under its own Redis key prefix and its own MySQL database (created on start, with
``like_records``); the harness deletes both after a run. A clean stop flushes the queue first.

    python -m bench.peers.redis_queue --port 8102 --redis-url redis://127.0.0.1:6379/0 \\
        --mysql-url mysql://root@127.0.0.1:3306/likes_bench_peer --redis-prefix likes-bench-peer:
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
from aiohttp import web
from asyncmy.errors import MySQLError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.peers.noop import LIKE_ROUTE, InvalidLike, error_reply, healthz, like_reply, parse_like, reply
from bench.peers.noop import main as peer_main
from node.checkpoint.mysql_sink import LIKE_RECORDS_DDL

log = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/likes_bench_peer"
DEFAULT_PREFIX = "likes-bench-peer:"
#: The queue writer's period and largest statement, in seconds and rows.
FLUSH_INTERVAL = 0.1
BATCH_ROWS = 500
#: How long a clean stop may spend flushing what is still queued, in seconds.
FINAL_FLUSH_TIMEOUT = 30.0
#: Bound on one MySQL statement or connect, in seconds.
MYSQL_TIMEOUT = 10.0

LIKE_SCRIPT = """
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if added == 1 then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

#: ``like_records`` as the existing services keep it: the very table our MySQL sink writes.
LIKE_RECORDS = LIKE_RECORDS_DDL
#: A like of a live row changes nothing; a like of a canceled one revives it (as our sink does).
UPSERT_RECORDS = (
    "INSERT INTO like_records (user_id, content_id, content_type, created_at, updated_at) VALUES {rows} "
    "ON DUPLICATE KEY UPDATE updated_at = IF(is_canceled = 0, updated_at, VALUES(updated_at)), "
    "is_canceled = 0"
)


# -- MySQL plumbing (the per-like MySQL peer uses it too) ------------------------------------------


@dataclass(frozen=True)
class MysqlTarget:
    """Where a peer's MySQL database is, from ``mysql://user[:password]@host[:port]/database``."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_url(cls, url: str) -> MysqlTarget:
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if parts.scheme != "mysql" or not database.replace("_", "").isalnum():
            raise ValueError(f"expected mysql://user@host:port/database (a plain name), got {url!r}")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 3306,
            unquote(parts.username or "root"),
            unquote(parts.password or ""),
            database,
        )

    def connect_args(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}


async def create_database(target: MysqlTarget, schema: Sequence[str]) -> None:
    """Create the peer's database if missing, and its tables."""
    async with asyncio.timeout(MYSQL_TIMEOUT):
        conn = await asyncmy.connect(**target.connect_args(), autocommit=True, connect_timeout=MYSQL_TIMEOUT)
    try:
        async with asyncio.timeout(MYSQL_TIMEOUT), conn.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
            await cursor.execute(f"USE `{target.database}`")
            for statement in schema:
                await cursor.execute(statement)
    finally:
        conn.close()


async def create_pool(target: MysqlTarget, size: int, *, autocommit: bool) -> Any:
    """An ``asyncmy`` pool on the peer's database."""
    async with asyncio.timeout(MYSQL_TIMEOUT):
        return await asyncmy.create_pool(
            minsize=1,
            maxsize=size,
            **target.connect_args(),
            db=target.database,
            autocommit=autocommit,
            connect_timeout=MYSQL_TIMEOUT,
        )


async def close_pool(pool: Any) -> None:
    pool.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            await pool.wait_closed()


def sql_time(ms: int) -> datetime:
    """A DATETIME(3) value in UTC from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


# -- the peer ----------------------------------------------------------------------------------------


@dataclass
class Counters:
    """What ``GET /stats`` shows: the queue's state and what reached MySQL."""

    likes: int = 0
    changed: int = 0
    redis_errors: int = 0
    rows_written: int = 0
    batches: int = 0
    flush_errors: int = 0
    max_backlog: int = 0
    flush_seconds: float = 0.0


@dataclass
class UsualDesign:
    """The peer's resources: Redis, the script, the queue and its writer."""

    redis_url: str
    mysql: MysqlTarget
    prefix: str
    #: None: redis-py's default pool, unbounded (one connection per concurrent call).
    redis_connections: int | None = None
    counters: Counters = field(default_factory=Counters)
    queue: asyncio.Queue[tuple[int, int, str, int]] = field(default_factory=asyncio.Queue)
    redis: Redis | None = None
    script: Any = None
    pool: Any = None
    writer: asyncio.Task[None] | None = None
    stopping: bool = False

    async def open(self) -> None:
        self.redis = Redis.from_url(self.redis_url, max_connections=self.redis_connections)
        self.script = self.redis.register_script(LIKE_SCRIPT)
        await self.redis.ping()
        await create_database(self.mysql, [LIKE_RECORDS])
        self.pool = await create_pool(self.mysql, 2, autocommit=True)
        self.writer = asyncio.create_task(self._write_forever())

    async def close(self) -> None:
        """Stop the writer between two flushes (a cancel mid-statement would lose its rows), then
        flush what is left, bounded in time."""
        self.stopping = True
        if self.writer is not None:
            try:
                async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                    await self.writer
            except TimeoutError:
                log.warning("the queue writer did not stop in time")
        try:
            async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                while not self.queue.empty() and await self.flush():
                    pass
        except TimeoutError:
            log.warning("stopped with %d likes still queued for MySQL", self.queue.qsize())
        if self.pool is not None:
            await close_pool(self.pool)
        if self.redis is not None:
            await self.redis.aclose()

    async def like(self, content_type: str, content_id: int, user: int) -> tuple[bool, int]:
        """One Lua call; a new like is queued for MySQL."""
        ms = time.time_ns() // 1_000_000
        keys = [f"{self.prefix}like:status:{content_type}:{content_id}"]
        keys.append(f"{self.prefix}like:count:{content_type}:{content_id}")
        added, count = await self.script(keys=keys, args=[user, ms])
        self.counters.likes += 1
        if added:
            self.counters.changed += 1
            self.queue.put_nowait((user, content_id, content_type, ms))
            self.counters.max_backlog = max(self.counters.max_backlog, self.queue.qsize())
        return bool(added), int(count)

    async def flush(self) -> bool:
        """Write everything queued now in statements of up to ``BATCH_ROWS``; False if MySQL failed
        (the rows go back on the queue for the next tick)."""
        while not self.queue.empty():
            rows = [self.queue.get_nowait() for _ in range(min(BATCH_ROWS, self.queue.qsize()))]
            started = time.perf_counter()
            try:
                await self._write(rows)
            except (MySQLError, OSError, TimeoutError) as exc:
                self.counters.flush_errors += 1
                log.warning("writing %d rows to MySQL failed: %r", len(rows), exc)
                for row in rows:
                    self.queue.put_nowait(row)
                return False
            self.counters.flush_seconds += time.perf_counter() - started
            self.counters.rows_written += len(rows)
            self.counters.batches += 1
        return True

    async def _write(self, rows: list[tuple[int, int, str, int]]) -> None:
        values: list[Any] = []
        for user, content_id, content_type, ms in rows:
            at = sql_time(ms)
            values += [user, content_id, content_type, at, at]
        statement = UPSERT_RECORDS.format(rows=", ".join(["(%s, %s, %s, %s, %s)"] * len(rows)))
        async with asyncio.timeout(MYSQL_TIMEOUT), self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, values)

    async def _write_forever(self) -> None:
        while not self.stopping:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    def stats(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.counters), "backlog": self.queue.qsize()}


PEER = web.AppKey("peer", UsualDesign)


async def like(request: web.Request) -> web.Response:
    """Validate, one Lua call, queue the record; answer without waiting for MySQL."""
    try:
        content_type, content_id, user = parse_like(request.match_info)
    except InvalidLike as exc:
        return error_reply(422, "invalid", str(exc))
    peer = request.app[PEER]
    try:
        changed, count = await peer.like(content_type, content_id, user)
    except RedisError as exc:
        peer.counters.redis_errors += 1
        return error_reply(503, "unavailable", f"redis: {exc}")
    return like_reply(changed, count)


async def stats(request: web.Request) -> web.Response:
    """Counters and the queue's backlog."""
    return reply(request.app[PEER].stats())


async def _resources(app: web.Application) -> AsyncIterator[None]:
    peer = app[PEER]
    await peer.open()
    yield
    await peer.close()


def create_app(
    redis_url: str = DEFAULT_REDIS_URL,
    mysql_url: str = DEFAULT_MYSQL_URL,
    prefix: str = DEFAULT_PREFIX,
    redis_connections: int | None = None,
) -> web.Application:
    """The usual design's application; Redis and MySQL are opened when it starts."""
    app = web.Application()
    app[PEER] = UsualDesign(redis_url, MysqlTarget.from_url(mysql_url), prefix, redis_connections)
    app.router.add_put(LIKE_ROUTE, like)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.cleanup_ctx.append(_resources)
    return app


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL, help="its database is created if missing")
    parser.add_argument("--redis-prefix", default=DEFAULT_PREFIX, help="prefix of every key it writes")
    parser.add_argument(
        "--redis-connections", type=int, default=None, help="cap on Redis connections (default: none)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s redis_queue %(levelname)s %(message)s")
    return peer_main(
        argv,
        description=__doc__,
        extend=_options,
        build=lambda args: create_app(
            args.redis_url, args.mysql_url, args.redis_prefix, args.redis_connections
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
