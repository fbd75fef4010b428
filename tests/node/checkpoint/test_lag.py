"""Checkpoint lag is true: a sink's lag and pending count read 0 only once every like this node answered
(for an item it owns) can be brought back from the sink, and for MySQL that means what ``likes restore
--from mysql`` reads, the item states, not just the ``like_records`` rows. Each check that reads 0
restores from the real MySQL into an empty data directory and looks at what a node started there
would hold.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from node.checkpoint import MysqlSink
from node.checkpoint import checkpointer as checkpointer_module
from node.checkpoint.checkpointer import Checkpointer, owner
from node.checkpoint.restore import restore_from_mysql
from node.config import load_config, parse_config
from node.durable.wal import WriteAheadLog
from node.http.api import CHECKPOINTER, STORE
from node.process.status import gather, summarize
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.node.checkpoint.conftest import MysqlDatabase
from tests.node.conftest import Client, ClientFactory, make_app
from tests.node.processes import NodeProcesses

POST = ItemKey("post", 7)
#: How long a bounded wait for the sink to catch up may take.
CATCH_UP = 15.0

NodeFactory = Callable[[float], Awaitable[tuple[Client, Checkpointer]]]


@pytest.fixture(autouse=True)
def no_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """The restores below read the test database, whatever the environment names."""
    monkeypatch.delenv("LIKES_MYSQL_URL", raising=False)


@pytest.fixture
async def make_node(
    aiohttp_client: ClientFactory, tmp_path: Path, mysql_database: MysqlDatabase
) -> AsyncIterator[NodeFactory]:
    """A node app checkpointing to the test database, its checkpointer ticked every ``interval``
    seconds (0: only when the test ticks it)."""
    checkpointers: list[Checkpointer] = []

    async def build(interval: float) -> tuple[Client, Checkpointer]:
        app = make_app(tmp_path / "node")
        checkpointer = Checkpointer(
            app[STORE],
            [MysqlSink(mysql_database.url)],
            me="n1",
            live_members=lambda: ["n1"],
            interval=interval or 3600.0,
            batch_items=100,
            max_backoff=0.05,
            takeover_delay=0.0,
        )
        app[CHECKPOINTER] = checkpointer
        checkpointers.append(checkpointer)
        client = await aiohttp_client(app)
        if interval:
            checkpointer.start()
        return client, checkpointer

    yield build
    for checkpointer in checkpointers:
        await checkpointer.close()


async def mysql_lane(client: Client) -> tuple[int, int]:
    """(pending_items, lag_ms) of the MySQL sink, as ``GET /v1/cluster`` shows them."""
    response = await client.get("/v1/cluster")
    assert response.status == 200
    lane = (await response.json())["checkpoint"]["mysql"]
    return lane["pending_items"], lane["lag_ms"]


async def like(client: Client, key: ItemKey, user: int) -> None:
    response = await client.put(f"/v1/items/{key.content_type}/{key.content_id}/likes/{user}")
    assert response.status == 200, await response.text()


def restored(root: Path, mysql_url: str) -> dict[ItemKey, set[int]]:
    """``likes restore --from mysql`` into an empty data directory under ``root``; each item's likers
    as the node started on it would hold them (its log replayed)."""
    data_dir = root / f"restored-{secrets.token_hex(4)}"
    config = parse_config(
        {
            "nodes": [{"name": "n1", "host": "127.0.0.1", "http_port": 18001, "gossip_port": 19001}],
            "storage": {"data_dir": str(data_dir)},
            "checkpoint": {"mysql_url": mysql_url},
            "security": {"secret": "a restore test secret, 32 bytes"},
        },
        base_dir=root,
    )
    assert restore_from_mysql(config, ["n1"], out=io.StringIO()) == 0
    return replayed(data_dir / "n1" / "wal")


def replayed(directory: Path) -> dict[ItemKey, set[int]]:
    """Each item's likers in the log under ``directory``, replayed as a start would."""
    wal = WriteAheadLog(directory)
    recovery = wal.open()
    asyncio.run(wal.close())
    store = LikeStore("reader-0123456789abcdef.1")
    assert store.restore(recovery.snapshot) + store.restore(recovery.deltas) == 0
    return {ItemKey.from_bytes(raw): set(store.item(raw).likers) for raw in store.item_keys()}


async def restorable(root: Path, mysql_url: str) -> dict[ItemKey, set[int]]:
    return await asyncio.to_thread(restored, root, mysql_url)


async def test_a_like_counts_for_mysql_from_its_answer_until_a_restore_brings_it_back(
    make_node: NodeFactory, tmp_path: Path, mysql_database: MysqlDatabase
) -> None:
    client, checkpointer = await make_node(0)
    await checkpointer.tick()
    assert await mysql_lane(client) == (0, 0)
    for user in (1, 2):
        await like(client, POST, user)
    pending, lag = await mysql_lane(client)
    assert POST not in await restorable(tmp_path, mysql_database.url)
    assert pending == 1 and lag > 0, "answered, not restorable yet, and the node reports nothing pending"
    await checkpointer.tick()
    assert await mysql_lane(client) == (0, 0)
    assert (await restorable(tmp_path, mysql_database.url))[POST] == {1, 2}


async def test_a_large_item_stays_pending_until_its_deferred_state_is_written(
    make_node: NodeFactory, tmp_path: Path, mysql_database: MysqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer_module, "LARGE_ITEM_LIKES", 2)  # 3 likers make a large item
    monkeypatch.setattr(checkpointer_module, "LARGE_STATE_INTERVAL", 0.5)
    client, checkpointer = await make_node(0)
    for user in (1, 2, 3):
        await like(client, POST, user)
    await checkpointer.tick()  # its first state is written at once
    assert await mysql_lane(client) == (0, 0)
    assert (await restorable(tmp_path, mysql_database.url))[POST] == {1, 2, 3}

    await like(client, POST, 4)
    await checkpointer.tick()  # within the interval: the like_records row is written, the state is not
    reader = MysqlSink(mysql_database.url)
    try:
        assert (await reader.read_item(POST))[1] == {1, 2, 3, 4}
    finally:
        await reader.close()
    pending, lag = await mysql_lane(client)
    assert (await restorable(tmp_path, mysql_database.url))[POST] == {1, 2, 3}
    assert pending == 1 and lag > 0, "in like_records, not in what a restore reads, and reported done"

    deadline = time.monotonic() + CATCH_UP  # nothing else changes: the deferred state is written anyway
    while await mysql_lane(client) != (0, 0):
        assert time.monotonic() < deadline, "the deferred state was never written"
        await asyncio.sleep(0.05)
        await checkpointer.tick()
    assert (await restorable(tmp_path, mysql_database.url))[POST] == {1, 2, 3, 4}


async def test_whenever_the_running_checkpointer_reads_0_a_restore_holds_every_like_answered(
    make_node: NodeFactory, tmp_path: Path, mysql_database: MysqlDatabase
) -> None:
    client, _ = await make_node(0.1)
    answered: dict[ItemKey, set[int]] = {}
    zeros = 0

    async def check() -> bool:
        """Whether MySQL reads 0; if so, a restore must hold every like answered before the read."""
        before = {key: set(users) for key, users in answered.items()}
        pending, lag = await mysql_lane(client)
        if lag:
            assert pending, "a lag without a pending item"
            return False
        assert pending == 0
        held = await restorable(tmp_path, mysql_database.url)
        missing = {key: users - held.get(key, set()) for key, users in before.items()}
        assert not any(missing.values()), f"reported 0, yet a restore lacks {missing}"
        return True

    for user in range(24):
        key = ItemKey("post", user % 3)
        await like(client, key, user)
        answered.setdefault(key, set()).add(user)
        zeros += await check()
    deadline = time.monotonic() + CATCH_UP
    while not await check():
        assert time.monotonic() < deadline, "MySQL never caught up"
        await asyncio.sleep(0.05)
    assert await restorable(tmp_path, mysql_database.url) == answered
    assert zeros < 24, "every read right after a like said 0"


async def test_the_items_of_a_member_that_left_lag_until_their_takeover_writes_them(
    tmp_path: Path, mysql_database: MysqlDatabase
) -> None:
    key = next(
        k for k in (ItemKey("post", n) for n in range(1000)) if owner(k.to_bytes(), ["me", "peer"]) == "peer"
    )
    store = LikeStore("me-0123456789abcdef.1")
    store.like(key, 1)  # the peer owns the item; it dies before writing this like
    view = {"me", "peer"}
    delay = 0.3
    checkpointer = Checkpointer(
        store,
        [MysqlSink(mysql_database.url)],
        me="me",
        live_members=lambda: view,
        interval=3600.0,
        batch_items=100,
        max_backoff=0.05,
        takeover_delay=delay,
    )
    try:
        await checkpointer.tick()
        await asyncio.sleep(delay)
        await checkpointer.tick()  # the start's takeover: nothing of the peer's
        assert checkpointer.status()["mysql"].lag_ms == 0

        view = {"me"}
        await checkpointer.tick()  # the peer is gone: its item is this member's, rewritten after the delay
        lane = checkpointer.status()["mysql"]
        assert key not in await restorable(tmp_path, mysql_database.url)
        assert lane.lag_ms > 0, "a like held for an item now owned, in no sink, and the lag says 0"

        deadline = time.monotonic() + CATCH_UP
        while checkpointer.status()["mysql"].lag_ms:
            assert time.monotonic() < deadline, "the takeover never wrote the item"
            await asyncio.sleep(0.05)
            await checkpointer.tick()
        assert (await restorable(tmp_path, mysql_database.url))[key] == {1}
    finally:
        await checkpointer.close()


@pytest.mark.cluster
def test_likes_status_says_mysql_caught_up_only_once_a_restore_holds_every_like(
    tmp_path: Path, mysql_database: MysqlDatabase
) -> None:
    nodes = NodeProcesses(
        tmp_path, ("n1", "n2"), extra=f"checkpoint: {{mysql_url: '{mysql_database.url}', interval_ms: 200}}\n"
    )
    try:
        nodes.start_all()
        config = load_config(nodes.config)
        answered: dict[ItemKey, set[int]] = {}

        def caught_up() -> bool:
            """Whether ``likes status`` says MySQL is caught up; if so, a restore must hold every like
            answered before the read."""
            before = {key: set(users) for key, users in answered.items()}
            (mysql,) = [sink for sink in summarize(gather(config)).sinks if sink.name == "mysql"]
            if not mysql.caught_up:
                return False
            assert mysql.lag_s == 0 and mysql.pending == 0, mysql
            held = restored(tmp_path, mysql_database.url)
            missing = {key: users - held.get(key, set()) for key, users in before.items()}
            assert not any(missing.values()), f"caught up, yet a restore lacks {missing}"
            return True

        for user in range(12):
            key = ItemKey("video", user % 4)
            nodes.call(nodes.names[user % 2], "PUT", f"/v1/items/video/{key.content_id}/likes/{user}")
            answered.setdefault(key, set()).add(user)
            caught_up()
        nodes.eventually(caught_up, "likes status says MySQL is caught up", timeout=CATCH_UP)
        assert restored(tmp_path, mysql_database.url) == answered
    finally:
        nodes.stop_all()
