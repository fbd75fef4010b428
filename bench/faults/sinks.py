"""The ``sinks`` nemesis's Redis and MySQL: a private prefix and database (``bench.servers.Scratch``)
that the nodes reach through proxies the nemesis can cut, and what they hold after the heal."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bench.faults.settings import CONTENT_TYPE
from bench.launch import HOST
from bench.servers import Scratch, Stores
from bench.tcpproxy import TcpProxy


class SinkServersUnavailable(RuntimeError):
    """Redis or MySQL cannot be reached, so the ``sinks`` nemesis cannot run."""


class Sinks:
    """A private Redis prefix and MySQL database, reached through cut-able proxies; cleaned up after."""

    def __init__(self, stores: Stores | None = None) -> None:
        self.scratch = Scratch.fresh(stores or Stores.for_tests(), "likes_faults")
        redis = urlsplit(self.scratch.stores.redis_url)
        mysql = self.scratch.stores.mysql_server
        self.redis_proxy = TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
        self.mysql_proxy = TcpProxy(mysql.host, mysql.port)
        self.proxies = (self.redis_proxy, self.mysql_proxy)

    async def __aenter__(self) -> Sinks:
        try:
            await self.scratch.open()
        except Exception as exc:
            raise SinkServersUnavailable(f"Redis or MySQL is not reachable: {exc!r}") from exc
        for proxy in self.proxies:
            await proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proxy in self.proxies:
            await proxy.stop()
        await self.scratch.close()

    def checkpoint_settings(self) -> dict[str, Any]:
        """The cluster file's checkpoint keys: both sinks through their proxies."""
        return self.scratch.checkpoint(
            redis_at=(HOST, self.redis_proxy.port), mysql_at=(HOST, self.mysql_proxy.port)
        )

    async def equal(self, expected: dict[int, set[int]]) -> tuple[int, int]:
        """How many items Redis and MySQL each hold differently from ``expected`` (count and users)."""
        from node.checkpoint import CheckpointSink, MysqlSink, RedisSink
        from node.state.item import ItemKey

        redis: CheckpointSink = RedisSink(self.scratch.stores.redis_url, prefix=self.scratch.prefix)
        mysql: CheckpointSink = MysqlSink(self.scratch.mysql_url)
        try:
            wrong = [0, 0]
            for item, users in expected.items():
                key = ItemKey(CONTENT_TYPE, item)
                for i, sink in enumerate((redis, mysql)):
                    try:
                        held = await sink.read_item(key)
                    except Exception:
                        held = (-1, set())
                    if held != (len(users), users):
                        wrong[i] += 1
            return wrong[0], wrong[1]
        finally:
            await redis.close()
            await mysql.close()

    async def duplicate_records(self) -> int:
        """``like_records`` rows sharing one (user, item): the unique key must make this zero."""
        rows = await self.scratch.stores.mysql_server.rows(
            "SELECT user_id, content_id, content_type FROM like_records"
            " GROUP BY user_id, content_id, content_type HAVING COUNT(*) > 1",
            database=self.scratch.database,
        )
        return len(rows)
