"""Peer 3: one MySQL transaction per like, nothing in front of it.

The variant chosen is the common one that stays correct and cheap as an item grows: per like, one
InnoDB transaction on a pooled ``asyncmy`` connection that

1. upserts the user's row in ``like_records`` (``INSERT ... ON DUPLICATE KEY UPDATE``, as our MySQL
   sink does: a live row is left alone, a canceled one is revived); ``changed`` is whether a row was
   inserted or revived (affected rows 1 or 2, 0 when already live);
2. only if it changed, adds one to the item's row in a ``like_counts`` table (an upsert);
3. reads the count back from ``like_counts`` and commits.

``SELECT COUNT(*)`` over ``like_records`` instead of a counter table would make each like cost as
much as the item has likes, which nobody runs on a hot post, so it is not measured. A deadlock or a
lock wait timeout is retried (up to three attempts), as production code does. The commit is durable
as far as the server's ``innodb_flush_log_at_trx_commit`` says (1 locally: a redo-log flush per
commit, with InnoDB's group commit).

Tables live in the peer's own database, created on start; the harness drops it after a run.

    python -m bench.peers.mysql_upsert --port 8103 --mysql-url mysql://root@127.0.0.1:3306/likes_bench_sql
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from asyncmy.errors import MySQLError

from bench.peers.noop import LIKE_ROUTE, InvalidLike, error_reply, healthz, like_reply, parse_like, reply
from bench.peers.noop import main as peer_main
from bench.peers.redis_queue import (
    LIKE_RECORDS,
    MYSQL_TIMEOUT,
    MysqlTarget,
    close_pool,
    create_database,
    create_pool,
    sql_time,
)

log = logging.getLogger(__name__)

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/likes_bench_sql"
#: Connections in the pool: MySQL's group commit shares a redo-log flush among concurrent commits.
DEFAULT_POOL = 32
LIKE_COUNTS = """CREATE TABLE IF NOT EXISTS like_counts (
    content_type VARCHAR(20) NOT NULL,
    content_id BIGINT UNSIGNED NOT NULL,
    like_count BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (content_type, content_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
UPSERT_RECORD = (
    "INSERT INTO like_records (user_id, content_id, content_type, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE updated_at = IF(is_canceled = 0, updated_at, VALUES(updated_at)), "
    "is_canceled = 0"
)
BUMP_COUNT = (
    "INSERT INTO like_counts (content_type, content_id, like_count) VALUES (%s, %s, 1) "
    "ON DUPLICATE KEY UPDATE like_count = like_count + 1"
)
READ_COUNT = "SELECT like_count FROM like_counts WHERE content_type = %s AND content_id = %s"
#: Deadlock found / lock wait timeout: the transaction was rolled back and may simply be run again.
RETRYABLE = frozenset({1213, 1205})
ATTEMPTS = 3


@dataclass
class Counters:
    """What ``GET /stats`` shows."""

    likes: int = 0
    changed: int = 0
    retries: int = 0
    errors: int = 0


@dataclass
class PerLikeMysql:
    """The peer's pool and counters."""

    mysql: MysqlTarget
    pool_size: int
    counters: Counters = field(default_factory=Counters)
    pool: Any = None

    async def open(self) -> None:
        await create_database(self.mysql, [LIKE_RECORDS, LIKE_COUNTS])
        self.pool = await create_pool(self.mysql, self.pool_size, autocommit=False)

    async def close(self) -> None:
        if self.pool is not None:
            await close_pool(self.pool)

    async def like(self, content_type: str, content_id: int, user: int) -> tuple[bool, int]:
        """One transaction: record upsert, counter bump if new, count read, commit."""
        at = sql_time(time.time_ns() // 1_000_000)
        async with asyncio.timeout(MYSQL_TIMEOUT), self.pool.acquire() as conn:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    async with conn.cursor() as cursor:
                        await cursor.execute(UPSERT_RECORD, (user, content_id, content_type, at, at))
                        changed = cursor.rowcount in (1, 2)  # inserted, or a canceled row revived
                        if changed:
                            await cursor.execute(BUMP_COUNT, (content_type, content_id))
                        await cursor.execute(READ_COUNT, (content_type, content_id))
                        row = await cursor.fetchone()
                    await conn.commit()
                except MySQLError as exc:
                    await conn.rollback()
                    if exc.args and exc.args[0] in RETRYABLE and attempt < ATTEMPTS:
                        self.counters.retries += 1
                        continue
                    raise
                self.counters.likes += 1
                self.counters.changed += changed
                return changed, int(row[0]) if row else 0
        raise AssertionError("unreachable: the last attempt returns or raises")


PEER = web.AppKey("peer", PerLikeMysql)


async def like(request: web.Request) -> web.Response:
    """Validate, then one transaction; answer after its commit."""
    try:
        content_type, content_id, user = parse_like(request.match_info)
    except InvalidLike as exc:
        return error_reply(422, "invalid", str(exc))
    peer = request.app[PEER]
    try:
        changed, count = await peer.like(content_type, content_id, user)
    except (MySQLError, OSError, TimeoutError) as exc:
        peer.counters.errors += 1
        return error_reply(503, "unavailable", f"mysql: {exc!r}")
    return like_reply(changed, count)


async def stats(request: web.Request) -> web.Response:
    """Counters."""
    return reply(dataclasses.asdict(request.app[PEER].counters))


async def _resources(app: web.Application) -> AsyncIterator[None]:
    peer = app[PEER]
    await peer.open()
    yield
    await peer.close()


def create_app(mysql_url: str = DEFAULT_MYSQL_URL, pool_size: int = DEFAULT_POOL) -> web.Application:
    """The per-like MySQL application; the pool opens when it starts."""
    app = web.Application()
    app[PEER] = PerLikeMysql(MysqlTarget.from_url(mysql_url), pool_size)
    app.router.add_put(LIKE_ROUTE, like)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.cleanup_ctx.append(_resources)
    return app


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL, help="its database is created if missing")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="connections in the pool (32)")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mysql_upsert %(levelname)s %(message)s")
    return peer_main(
        argv,
        description=__doc__,
        extend=_options,
        build=lambda args: create_app(args.mysql_url, args.pool),
    )


if __name__ == "__main__":
    sys.exit(main())
