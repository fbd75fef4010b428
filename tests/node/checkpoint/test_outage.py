"""Redis and MySQL outages: a write fails fast with SinkUnavailable, and the retry lands exactly once.

Each sink reaches its real server through a ``TcpProxy`` that the test cuts: by resetting every
connection (a restart, a firewall reject) or by silencing them (a partition, where only the sink's
own timeout helps). The checks read the store directly, not through the proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.tcpproxy import CutMode, TcpProxy
from node.checkpoint import CheckpointSink, ItemCheckpoint, MysqlSink, RedisSink
from node.errors import SinkUnavailable
from node.state.item import ItemKey
from tests.node.checkpoint.conftest import REDIS_URL, MysqlDatabase
from tests.node.checkpoint.stores import RawReader, SinkModel, assert_holds

#: The sinks' timeout here: short, so the outage tests stay quick, yet long enough that a loaded
#: machine completes a healthy round of a 60,000-like batch within it (0.5 s did not, under CI's load).
TIMEOUT = 2.0
#: "Fails fast": well within this, never a hang.
BOUND = 3 * TIMEOUT
T0 = 1_700_000_000_000


@dataclass
class Outage:
    """A sink that reaches its server through a proxy the test can cut."""

    proxy: TcpProxy
    sink: CheckpointSink
    raw: RawReader


@dataclass
class Target:
    """A real server, how to build a sink that reaches it through a given address, and its raw reader."""

    host: str
    port: int
    make_sink: Callable[[str, int], CheckpointSink]
    raw: RawReader


@pytest.fixture(params=["redis", "mysql"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "redis":
        prefix: str = request.getfixturevalue("redis_prefix")  # skips (fails on CI) if Redis is down
        parts = urlsplit(REDIS_URL)
        return Target(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            lambda host, port: RedisSink(
                f"redis://{host}:{port}{parts.path}", prefix=prefix, timeout=TIMEOUT
            ),
            request.getfixturevalue("redis_raw"),
        )
    database: MysqlDatabase = request.getfixturevalue("mysql_database")
    return Target(
        database.server.host,
        database.server.port,
        lambda host, port: MysqlSink(
            database.server.url(database.name, host=host, port=port), timeout=TIMEOUT
        ),
        database.raw,
    )


@pytest.fixture
async def outage(target: Target) -> AsyncIterator[Outage]:
    async with TcpProxy(target.host, target.port) as proxy:
        sink = target.make_sink(proxy.host, proxy.port)
        try:
            yield Outage(proxy, sink, target.raw)
        finally:
            await sink.close()


def likes(
    key: ItemKey, users: range, *, count: int | None = None, unliked: tuple[int, ...] = ()
) -> ItemCheckpoint:
    return ItemCheckpoint(
        key=key,
        count=len(users) if count is None else count,
        liked={user: T0 + user for user in users},
        unliked=unliked,
        counters={"views": len(users)},
        state=f"state of {key} with {len(users)}".encode(),
    )


async def fails_fast(call: Awaitable[object]) -> float:
    """Await ``call``; it must raise SinkUnavailable within BOUND. Returns the seconds it took."""
    started = time.monotonic()
    with pytest.raises(SinkUnavailable):
        async with asyncio.timeout(10 * BOUND):  # so a hang fails the test instead of freezing it
            await call
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"took {elapsed:.2f} s to report the outage (timeout {TIMEOUT} s)"
    return elapsed


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
async def test_a_write_during_an_outage_fails_fast_and_the_retry_lands_once(
    outage: Outage, mode: CutMode
) -> None:
    sink, model, key = outage.sink, SinkModel(), ItemKey("post", 1)
    await sink.open()
    first = [likes(key, range(1, 4))]
    await sink.write(first)
    model.write(first)

    outage.proxy.cut(mode)
    second = [likes(key, range(4, 6), count=4, unliked=(1,)), likes(ItemKey("post", 2), range(1, 3))]
    await fails_fast(sink.write(second))  # on the connection the cut broke
    await fails_fast(sink.write(second))  # on a new connection, into the outage
    await fails_fast(sink.read_item(key))

    outage.proxy.restore()
    await sink.write(second)
    model.write(second)
    await assert_holds(sink, outage.raw, model, [key, ItemKey("post", 2)])


async def test_a_batch_cut_halfway_lands_exactly_once_when_written_again(outage: Outage) -> None:
    sink, model = outage.sink, SinkModel()
    await sink.open()
    keys = [ItemKey("post", n) for n in range(1, 31)]
    batch = [likes(key, range(1, 2_001)) for key in keys]
    before = outage.proxy.forwarded
    writing = asyncio.create_task(sink.write(batch))
    async with asyncio.timeout(10):
        while outage.proxy.forwarded - before < 200_000 and not writing.done():
            await asyncio.sleep(0)
    outage.proxy.cut("reset")
    with pytest.raises(SinkUnavailable):
        await writing  # part of the batch has landed, part has not

    outage.proxy.restore()
    await sink.write(batch)
    model.write(batch)
    await assert_holds(sink, outage.raw, model, keys)


async def test_a_sink_opened_during_an_outage_works_once_the_server_is_back(outage: Outage) -> None:
    sink, model, key = outage.sink, SinkModel(), ItemKey("post", 1)
    outage.proxy.cut("blackhole")
    await fails_fast(sink.open())
    await fails_fast(sink.write([likes(key, range(1, 3))]))

    outage.proxy.restore()
    batch = [likes(key, range(1, 3))]
    await sink.write(batch)  # MySQL creates its tables now
    model.write(batch)
    await assert_holds(sink, outage.raw, model, [key])


async def test_a_closed_sink_refuses_writes(outage: Outage) -> None:
    await outage.sink.open()
    await outage.sink.close()
    with pytest.raises(SinkUnavailable, match="closed"):
        await outage.sink.write([likes(ItemKey("post", 1), range(1, 2))])


async def test_the_proxy_forwards_until_cut(redis_client: Redis) -> None:
    parts = urlsplit(REDIS_URL)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        client = Redis(host=proxy.host, port=proxy.port, socket_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0))
        try:
            assert await client.ping()
            proxy.cut("reset")
            with pytest.raises(RedisConnectionError):
                await client.ping()
            proxy.restore()
            assert await client.ping()
        finally:
            await client.aclose()
        assert proxy.connections <= 1
