"""Checkpoints under a sink outage: likes keep being acknowledged, and afterwards Redis, MySQL and every
node's SQLite file hold exactly the converged state.

A real 3-node cluster writes to the real Redis and MySQL through TCP proxies the test controls (on an
event loop of their own, in a thread); the test cuts both for several seconds under load.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncmy
import pytest
from redis import Redis

from bench.launch import likes_command
from bench.tcpproxy import TcpProxy
from node.checkpoint import MysqlSink, RedisSink, SqliteSink
from node.checkpoint.checkpointer import owner
from node.state.item import ItemKey
from tests.node.checkpoint.conftest import MYSQL_SERVER_URL, REDIS_URL, server_unreachable
from tests.node.processes import NodeProcesses

pytestmark = pytest.mark.cluster

NODES = ("n1", "n2", "n3")
ITEMS = [ItemKey("post", i) for i in range(1, 9)]
T = TypeVar("T")


class Background:
    """An event loop in a thread, for the asyncio proxies and sink reads of a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Any, *args: Any) -> None:
        self.run(_call(function, *args))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def _call(function: Any, *args: Any) -> None:
    function(*args)


@pytest.fixture
def background() -> Iterator[Background]:
    loop = Background()
    yield loop
    loop.close()


@pytest.fixture
def servers(background: Background) -> Iterator[tuple[str, str]]:
    """A fresh MySQL database and Redis prefix: (mysql url without the database, prefix)."""
    prefix = f"likes-test-{secrets.token_hex(6)}:"
    database = f"likes_ck_{secrets.token_hex(6)}"
    try:
        redis = Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
        redis.ping()
        background.run(_mysql(f"CREATE DATABASE {database}"))
    except Exception as exc:  # either server down
        server_unreachable(f"Redis or MySQL is not reachable: {exc!r}")
    yield database, prefix
    background.run(_mysql(f"DROP DATABASE IF EXISTS {database}"))
    keys = list(redis.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 1000):
        redis.delete(*keys[start : start + 1000])
    redis.close()


async def _mysql(statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
    """Run one statement on the test server (set-up and checks; the sinks have their own driver use)."""
    url = urlsplit(MYSQL_SERVER_URL)
    connection = await asyncmy.connect(
        host=url.hostname, port=url.port or 3306, user=url.username or "root",
        password=url.password or "", database=database, autocommit=True,
    )  # fmt: skip
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(statement)
            return list(await cursor.fetchall())
    finally:
        connection.close()


def test_a_sink_outage_never_blocks_likes_and_the_sinks_catch_up_exactly(
    tmp_path: Path, background: Background, servers: tuple[str, str]
) -> None:
    database, prefix = servers
    redis_host, redis_port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    mysql_host, mysql_port = MYSQL_SERVER_URL.split("@")[1].split(":")
    redis_proxy = TcpProxy(redis_host, int(redis_port))
    mysql_proxy = TcpProxy(mysql_host, int(mysql_port))
    for proxy in (redis_proxy, mysql_proxy):
        background.run(proxy.start())
    nodes = NodeProcesses(
        tmp_path,
        NODES,
        extra=(
            f"checkpoint: {{redis_url: 'redis://127.0.0.1:{redis_proxy.port}/0', redis_prefix: '{prefix}',\n"
            f"  mysql_url: 'mysql://root@127.0.0.1:{mysql_proxy.port}/{database}',\n"
            "  interval_ms: 100, timeout_ms: 500, max_backoff_ms: 1000}\n"
        ),
    )
    rng = random.Random(11)
    try:
        nodes.start_all()

        def burst(users: range) -> None:
            for user in users:
                node, item = rng.choice(NODES), rng.choice(ITEMS)
                path = f"/v1/items/{item.content_type}/{item.content_id}/likes/{user % 60}"
                method = "DELETE" if rng.random() < 0.25 else "PUT"
                nodes.call(node, method, path)  # 200, outage or not

        burst(range(0, 150))
        for proxy in (redis_proxy, mysql_proxy):
            background.call(proxy.cut, "blackhole")
        started = time.monotonic()
        burst(range(150, 400))  # every one of these is acknowledged during the outage
        nodes.eventually(
            lambda: (
                all(
                    lane["down"]
                    for n in NODES
                    for name, lane in nodes.call(n, "GET", "/v1/cluster")["checkpoint"].items()
                    if name != "sqlite" and lane["pending_items"]
                )
                and any(nodes.call(n, "GET", "/v1/cluster")["checkpoint"]["mysql"]["errors"] for n in NODES)
            ),
            "the nodes see the sinks down",
        )
        time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
        for proxy in (redis_proxy, mysql_proxy):
            background.call(proxy.restore)
        burst(range(400, 450))

        expected = {item: _likers(nodes, item) for item in ITEMS}
        redis_sink = RedisSink(REDIS_URL, prefix=prefix)
        mysql_sink = MysqlSink(f"{MYSQL_SERVER_URL}/{database}")

        def sinks_exact() -> bool:
            return all(
                background.run(sink.read_item(item)) == (len(users), users)
                for item, users in expected.items()
                for sink in (redis_sink, mysql_sink)
            )

        nodes.eventually(sinks_exact, "Redis and MySQL hold exactly the converged state", timeout=30)
        nodes.stop_all()  # each node's SQLite file holds the items it owns: read them at rest
        for item, users in expected.items():
            node = owner(item.to_bytes(), NODES)
            assert node is not None
            sqlite = SqliteSink(nodes.data_dir(node) / "checkpoint.sqlite")
            background.run(sqlite.open())
            try:
                assert background.run(sqlite.read_item(item)) == (len(users), users), (node, item)
            finally:
                background.run(sqlite.close())
        background.run(redis_sink.close())
        background.run(mysql_sink.close())
        duplicates = background.run(
            _mysql(
                "SELECT user_id, content_id, content_type FROM like_records"
                " GROUP BY user_id, content_id, content_type HAVING COUNT(*) > 1",
                database,
            )
        )
        assert duplicates == []
    finally:
        nodes.stop_all()
        for proxy in (redis_proxy, mysql_proxy):
            background.run(proxy.stop())


def _likers(nodes: NodeProcesses, item: ItemKey) -> set[int]:
    """The item's likers once every node agrees on them."""
    path = f"{item.content_type}/{item.content_id}"
    nodes.eventually(lambda: len({frozenset(nodes.likers(n, path)) for n in NODES}) == 1, f"{path} converges")
    return nodes.likers("n1", path)


def test_rendezvous_ownership_gives_each_item_one_owner_and_moves_only_a_dead_members_items() -> None:
    members = ["n1", "n2", "n3"]
    keys = [ItemKey("post", i).to_bytes() for i in range(3000)]
    owners = {key: owner(key, members) for key in keys}
    counts = {m: sum(1 for o in owners.values() if o == m) for m in members}
    assert all(800 < c < 1200 for c in counts.values()), counts  # spread about evenly
    survivors = {key: owner(key, ["n1", "n3"]) for key in keys}
    moved = [key for key in keys if survivors[key] != owners[key]]
    assert all(owners[key] == "n2" for key in moved)  # only n2's items change hands
    assert owner(keys[0], []) is None


def test_every_disk_lost_the_cluster_is_restored_from_mysql(
    tmp_path: Path, background: Background, servers: tuple[str, str]
) -> None:
    database, _ = servers
    nodes = NodeProcesses(
        tmp_path,
        ("n1", "n2"),
        extra=f"checkpoint: {{mysql_url: '{MYSQL_SERVER_URL}/{database}', interval_ms: 100}}\n",
    )
    mysql = MysqlSink(f"{MYSQL_SERVER_URL}/{database}")
    try:
        nodes.start_all()
        for user in range(30):
            nodes.call("n1" if user % 2 else "n2", "PUT", f"/v1/items/video/{user % 3}/likes/{user}")
        nodes.call("n1", "DELETE", "/v1/items/video/0/likes/3")
        nodes.call("n2", "POST", "/v1/items/video/1/counters/views", {"delta": 42})
        expected = {i: {u for u in range(30) if u % 3 == i} - {3} for i in range(3)}
        nodes.eventually(
            lambda: all(
                background.run(mysql.read_item(ItemKey("video", i))) == (len(users), users)
                for i, users in expected.items()
            ),
            "MySQL holds every like",
        )
        nodes.stop_all()
        for name in nodes.names:  # every disk is gone
            for path in sorted(nodes.data_dir(name).rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
        result = subprocess.run(
            [*likes_command(), "restore", "--config", str(nodes.config), "--from", "mysql"],
            capture_output=True,
            text=True,
            timeout=60,
            env=nodes.env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "n1: restored 3 items" in result.stdout and "n2: restored 3 items" in result.stdout
        nodes.start_all()
        for name in nodes.names:
            for i, users in expected.items():
                assert nodes.likers(name, f"video/{i}") == users
            assert nodes.call(name, "GET", "/v1/items/video/1")["counters"] == {"views": 42}
    finally:
        nodes.stop_all()
        background.run(mysql.close())
