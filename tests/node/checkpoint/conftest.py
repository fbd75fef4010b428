"""One fixture per sink kind, each against a real, private store that is removed afterwards.

SQLite lives in ``tmp_path``; Redis gets a random key prefix whose keys are deleted afterwards; MySQL
gets a fresh database ``likes_test_<hex>`` that is dropped afterwards. The servers default to the
local ones and can be pointed elsewhere with ``LIKES_TEST_REDIS_URL`` and ``LIKES_TEST_MYSQL_URL``
(a server url without a database). An unreachable server skips its tests locally and fails them
on CI (``CI=true``): see ``server_unreachable``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import asyncmy
import pytest
from redis.asyncio import Redis

from node.checkpoint import MysqlSink, RedisSink, SqliteSink
from tests.node.checkpoint.stores import MysqlRaw, RedisRaw, SqliteRaw

REDIS_URL = os.environ.get("LIKES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MYSQL_SERVER_URL = os.environ.get("LIKES_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
#: How long to wait for a test server before calling it unreachable.
PROBE_TIMEOUT = 3.0


def server_unreachable(reason: str) -> NoReturn:
    """Skip locally, fail on CI: a CI run must never go green by skipping the real-server tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: real-server tests must run)")
    pytest.skip(reason)


@dataclass
class MysqlServer:
    """Where the test MySQL listens, and how to reach one database on it."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, *, host: str | None = None, port: int | None = None) -> str:
        """A sink url for ``database``, optionally through another address (a proxy)."""
        secret = f":{self.password}" if self.password else ""
        return f"mysql://{self.user}{secret}@{host or self.host}:{port or self.port}/{database}"

    async def connect(self, database: str | None = None) -> asyncmy.Connection:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return await asyncmy.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=database,
                autocommit=True,
                connect_timeout=PROBE_TIMEOUT,
            )


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
    client = Redis.from_url(REDIS_URL, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT)
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
    prefix = f"likes-test-{secrets.token_hex(6)}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis_client.delete(*keys[start : start + 1000])


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
    parts = urlsplit(MYSQL_SERVER_URL)
    return MysqlServer(
        parts.hostname or "127.0.0.1", parts.port or 3306, parts.username or "root", parts.password or ""
    )


@pytest.fixture
async def mysql_database(mysql_server: MysqlServer) -> AsyncIterator[MysqlDatabase]:
    """A fresh database ``likes_test_<hex>``, dropped afterwards."""
    try:
        admin = await mysql_server.connect()
    except Exception as exc:
        server_unreachable(f"MySQL at {MYSQL_SERVER_URL} is not reachable: {exc!r}")
    name = f"likes_test_{secrets.token_hex(6)}"
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE {name}")
        conn = await mysql_server.connect(name)
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
