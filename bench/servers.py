"""The Redis and MySQL servers the bench and the tests use, and the private places a run gets on them.

Both are the machine's own services unless named otherwise: Redis at 127.0.0.1:6379 and MariaDB at
127.0.0.1:3306 as root without a password. The bench's commands take ``--redis-url`` and
``--mysql-url``; the tests and the fault harness read ``LIKES_TEST_REDIS_URL`` and
``LIKES_TEST_MYSQL_URL``. A MySQL url here names a server, not a database.

Every run that writes to them gets its own ``Scratch``: a Redis key prefix and a MySQL database no
other run uses, removed afterwards, so runs neither see nor leave each other's data. ``MysqlServer``
and the module's functions are asynchronous (the tests and the fault harness run inside an event
loop); ``Stores`` wraps them for measurement drivers that run none. Every call is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import asyncmy
from redis.asyncio import Redis

from bench.common import run_async

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_MYSQL_URL = "mysql://root@127.0.0.1:3306"
#: The servers of the tests and the fault harness.
TEST_REDIS_URL = os.environ.get("LIKES_TEST_REDIS_URL", LOCAL_REDIS_URL)
TEST_MYSQL_URL = os.environ.get("LIKES_TEST_MYSQL_URL", LOCAL_MYSQL_URL)
#: Bound on one administrative call (a connect, a statement, a scan), in seconds.
ADMIN_TIMEOUT = 10.0

_T = TypeVar("_T")


def private_names(stem: str) -> tuple[str, str]:
    """A Redis key prefix and a MySQL database name that no other run uses, from ``stem``
    (``likes_test``: ``likes-test-<hex>:`` and ``likes_test_<hex>``, 48 random bits)."""
    token = secrets.token_hex(6)
    return f"{stem.replace('_', '-')}-{token}:", f"{stem}_{token}"


# -- Redis ---------------------------------------------------------------------------------------------


def redis_client(url: str, timeout: float = ADMIN_TIMEOUT) -> Redis:
    """A client of the Redis at ``url`` whose every call is bounded by ``timeout``."""
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


async def delete_prefix(client: Redis, prefix: str) -> int:
    """Delete every key under ``prefix``; how many there were."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    return len(keys)


def through(url: str, host: str, port: int) -> str:
    """``url`` with its address replaced by ``host:port`` (a proxy), credentials and path kept."""
    parts = urlsplit(url)
    credentials, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials}{at}{host}:{port}").geturl()


# -- MySQL ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MysqlServer:
    """Where a MySQL server listens and whom to log in as; how to reach one database on it."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> MysqlServer:
        """The server of ``mysql://user[:password]@host[:port]`` (a database in the url is ignored)."""
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1", parts.port or 3306, parts.username or "root", parts.password or ""
        )

    def url(self, database: str, *, host: str | None = None, port: int | None = None) -> str:
        """A sink url for ``database``, optionally through another address (a proxy)."""
        secret = f":{self.password}" if self.password else ""
        return f"mysql://{self.user}{secret}@{host or self.host}:{port or self.port}/{database}"

    async def connect(
        self, database: str | None = None, *, timeout: float = ADMIN_TIMEOUT
    ) -> asyncmy.Connection:
        """An autocommit connection (to ``database``, if given); the caller closes it."""
        async with asyncio.timeout(timeout):
            return await asyncmy.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=database,
                autocommit=True,
                connect_timeout=timeout,
            )

    async def rows(
        self,
        sql: str,
        args: Sequence[Any] = (),
        *,
        database: str | None = None,
        timeout: float = ADMIN_TIMEOUT,
    ) -> list[tuple[Any, ...]]:
        """Every row ``sql`` returns, on a connection of its own."""
        async with asyncio.timeout(timeout):
            connection = await self.connect(database, timeout=timeout)
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute(sql, args or None)
                    return list(await cursor.fetchall())
            finally:
                connection.close()

    async def first_rows(self, statements: Sequence[str], *, timeout: float = ADMIN_TIMEOUT) -> list[Any]:
        """Each statement's first row (None for none), one after the other on one connection."""
        async with contextlib.AsyncExitStack() as stack:
            connection = await self.connect(timeout=timeout)
            stack.callback(connection.close)
            rows = []
            for statement in statements:
                async with asyncio.timeout(timeout), connection.cursor() as cursor:
                    await cursor.execute(statement)
                    rows.append(await cursor.fetchone())
            return rows


# -- both, for a driver with no event loop ---------------------------------------------------------------


@dataclass(frozen=True)
class Stores:
    """A Redis and a MySQL server (``mysql_url`` names a server, no database), reached from code that
    runs no event loop of its own: each call runs one, bounded."""

    redis_url: str
    mysql_url: str

    @classmethod
    def for_tests(cls) -> Stores:
        """The servers of the tests and the fault harness."""
        return cls(TEST_REDIS_URL, TEST_MYSQL_URL)

    @property
    def mysql_server(self) -> MysqlServer:
        return MysqlServer.from_url(self.mysql_url)

    def database_url(self, database: str) -> str:
        return self.mysql_server.url(database)

    def mysql(self, *statements: str) -> list[Any]:
        """Each statement's first row (None for none), on one autocommit connection."""
        return run_async(lambda: self.mysql_server.first_rows(statements))

    def mysql_rows(
        self,
        sql: str,
        args: Sequence[Any] = (),
        *,
        database: str | None = None,
        timeout: float = ADMIN_TIMEOUT,
    ) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` (on ``database``, if given)."""
        return run_async(lambda: self.mysql_server.rows(sql, args, database=database, timeout=timeout))

    def redis(self, action: Callable[[Redis], Awaitable[_T]]) -> _T:
        """Run ``action`` with a fresh client, closed afterwards."""

        async def run() -> _T:
            client = redis_client(self.redis_url)
            try:
                return await action(client)
            finally:
                await client.aclose()

        return run_async(run)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; how many there were."""
        return self.redis(lambda client: delete_prefix(client, prefix))

    def reachable(self) -> dict[str, str]:
        """What is not reachable, with why (empty when both are)."""
        problems = {}
        try:
            self.redis(lambda client: client.ping())
        except Exception as exc:
            problems["redis"] = f"Redis at {self.redis_url}: {exc!r}"
        try:
            self.mysql("SELECT 1")
        except Exception as exc:
            problems["mysql"] = f"MySQL at {self.mysql_url}: {exc!r}"
        return problems

    def pids(self) -> dict[str, int]:
        """The Redis and MariaDB server processes, to sample their CPU (absent when not local)."""
        found: dict[str, int] = {}
        with contextlib.suppress(Exception):
            found["redis"] = int(self.redis(lambda client: client.info("server"))["process_id"])
        with contextlib.suppress(Exception):
            (row,) = self.mysql("SELECT @@pid_file")
            found["mysql"] = int(Path(row[0]).read_text().strip())
        return {name: pid for name, pid in found.items() if Path(f"/proc/{pid}").exists()}

    def settings(self) -> dict[str, Any]:
        """What durability the stores give: part of what designs that use them are compared on."""
        found: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for key in ("appendonly", "appendfsync", "save"):
                reply = self.redis(lambda client, key=key: client.config_get(key))  # type: ignore[misc]
                value = reply.get(key, reply.get(key.encode()))
                found[f"redis_{key}"] = value.decode() if isinstance(value, bytes) else value
        with contextlib.suppress(Exception):
            rows = self.mysql(
                "SELECT @@innodb_flush_log_at_trx_commit", "SELECT @@sync_binlog", "SELECT VERSION()"
            )
            found["mysql_innodb_flush_log_at_trx_commit"] = int(rows[0][0])
            found["mysql_sync_binlog"] = int(rows[1][0])
            found["mysql_version"] = rows[2][0]
        return found


# -- one run's private places --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scratch:
    """A Redis key prefix and a MySQL database on ``stores`` that no other run uses."""

    stores: Stores
    prefix: str
    database: str

    @classmethod
    def fresh(cls, stores: Stores, stem: str) -> Self:
        """New names from ``stem`` (``private_names``)."""
        return cls(stores, *private_names(stem))

    @property
    def mysql_url(self) -> str:
        """The database's url, as a sink takes it."""
        return self.stores.database_url(self.database)

    def checkpoint(
        self, *, redis_at: tuple[str, int] | None = None, mysql_at: tuple[str, int] | None = None
    ) -> dict[str, Any]:
        """The cluster file's checkpoint keys that send the nodes' checkpoints here, directly or
        through the given addresses (proxies)."""
        redis = self.stores.redis_url if redis_at is None else through(self.stores.redis_url, *redis_at)
        mysql = self.mysql_url
        if mysql_at is not None:
            mysql = self.stores.mysql_server.url(self.database, host=mysql_at[0], port=mysql_at[1])
        return {"redis_url": redis, "redis_prefix": self.prefix, "mysql_url": mysql}

    async def open(self) -> None:
        """Check that Redis answers and create the database; raises what went wrong."""
        client = redis_client(self.stores.redis_url)
        try:
            async with asyncio.timeout(ADMIN_TIMEOUT):
                await client.ping()
        finally:
            await client.aclose()
        await self.stores.mysql_server.rows(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")

    async def close(self) -> None:
        """Drop the database and delete the keys, each best effort: a failure here must not hide what
        the run found."""
        with contextlib.suppress(Exception):
            await self.stores.mysql_server.rows(f"DROP DATABASE IF EXISTS `{self.database}`")
        with contextlib.suppress(Exception):
            client = redis_client(self.stores.redis_url)
            try:
                await delete_prefix(client, self.prefix)
            finally:
                await client.aclose()
