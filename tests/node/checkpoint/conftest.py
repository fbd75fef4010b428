"""One fixture per sink kind, each against a real, private store that is removed afterwards.

SQLite lives in ``tmp_path``; Redis gets a random key prefix whose keys are deleted afterwards; MySQL
gets a fresh database ``likes_test_<hex>`` that is dropped afterwards. The servers are the tests'
(``bench.servers``: the local ones unless ``LIKES_TEST_REDIS_URL`` and ``LIKES_TEST_MYSQL_URL``, a
server url without a database, name others). An unreachable server skips its tests locally and fails
them on CI (``CI=true``): see ``server_unreachable``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from redis.asyncio import Redis

from bench import servers
from bench.servers import MysqlServer
from node.checkpoint import MysqlSink, RedisSink, SqliteSink
from tests.node.checkpoint.stores import MysqlRaw, RedisRaw, SqliteRaw

REDIS_URL = servers.TEST_REDIS_URL
MYSQL_SERVER_URL = servers.TEST_MYSQL_URL
#: How long to wait for a test server before calling it unreachable.
PROBE_TIMEOUT = 3.0


def server_unreachable(reason: str) -> NoReturn:
    """Skip locally, fail on CI: a CI run must never go green by skipping the real-server tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: real-server tests must run)")
    pytest.skip(reason)


@dataclass
class MysqlDatabase:
    """A fresh database on the test server, and an autocommit connection to it."""

    server: MysqlServer
    name: str
    raw: MysqlRaw

    @property
    def url(self) -> str:
        return self.server.url(self.name)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoint.sqlite3"


@pytest.fixture
async def sqlite_sink(sqlite_path: Path) -> AsyncIterator[SqliteSink]:
    sink = SqliteSink(sqlite_path)
    await sink.open()
    yield sink
    await sink.close()


@pytest.fixture
def sqlite_raw(sqlite_path: Path) -> SqliteRaw:
    return SqliteRaw(sqlite_path)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the test Redis (its own, not the sink's)."""
    client = servers.redis_client(REDIS_URL, PROBE_TIMEOUT)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await client.ping()
    except Exception as exc:
        await client.aclose()
        server_unreachable(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix, _ = servers.private_names("likes_test")
    yield prefix
    await servers.delete_prefix(redis_client, prefix)


@pytest.fixture
async def redis_sink(redis_prefix: str) -> AsyncIterator[RedisSink]:
    sink = RedisSink(REDIS_URL, prefix=redis_prefix)
    await sink.open()
    yield sink
    await sink.close()


@pytest.fixture
def redis_raw(redis_client: Redis, redis_prefix: str) -> RedisRaw:
    return RedisRaw(redis_client, redis_prefix)


@pytest.fixture
def mysql_server() -> MysqlServer:
    return MysqlServer.from_url(MYSQL_SERVER_URL)


@pytest.fixture
async def mysql_database(mysql_server: MysqlServer) -> AsyncIterator[MysqlDatabase]:
    """A fresh database ``likes_test_<hex>``, dropped afterwards."""
    try:
        admin = await mysql_server.connect(timeout=PROBE_TIMEOUT)
    except Exception as exc:
        server_unreachable(f"MySQL at {MYSQL_SERVER_URL} is not reachable: {exc!r}")
    _, name = servers.private_names("likes_test")
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE {name}")
        conn = await mysql_server.connect(name, timeout=PROBE_TIMEOUT)
        try:
            yield MysqlDatabase(mysql_server, name, MysqlRaw(conn))
        finally:
            conn.close()
            async with asyncio.timeout(30), admin.cursor() as cursor:
                await cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


@pytest.fixture
async def mysql_sink(mysql_database: MysqlDatabase) -> AsyncIterator[MysqlSink]:
    sink = MysqlSink(mysql_database.url)
    await sink.open()
    yield sink
    await sink.close()


@pytest.fixture
def mysql_raw(mysql_database: MysqlDatabase) -> MysqlRaw:
    return mysql_database.raw
