"""A log that cannot write: the writes it refused change nothing, and the node takes writes again.

The log's segment descriptor is made ``/dev/full``, a real file whose every write fails with ENOSPC, as
a full disk's does; the next probe opens a new segment in the real directory and succeeds, as a freed
disk would. What the tests check is what a client and the rest of the cluster can see.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node.durable.itemstore import ItemStore
from node.durable.wal import WriteAheadLog
from node.http.api import DURABILITY, STORE
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.node.conftest import Client, ClientFactory, fill_log_disk, make_app

ITEM = "post/7"
KEY = ItemKey("post", 7)


def fill_disk(app: web.Application) -> None:
    """From now on every write of the app's log fails with ENOSPC."""
    fill_log_disk(app[DURABILITY].wal.directory)


async def wait_for(check: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    return make_app(tmp_path)


async def test_a_refused_like_is_seen_nowhere(aiohttp_client: ClientFactory, app: web.Application) -> None:
    client: Client = await aiohttp_client(app)
    assert (await client.put(f"/v1/items/{ITEM}/likes/1")).status == 200
    store: LikeStore = app[STORE]
    store.drain_deltas()
    dirty_before = store.drain_dirty()
    assert KEY.to_bytes() in dirty_before
    fingerprint = store.fingerprint()
    fill_disk(app)

    refused = await client.put(f"/v1/items/{ITEM}/likes/2")
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "not_durable"
    for method, path in (("DELETE", "likes/1"), ("PUT", "likes/3")):  # refused at once, too
        answer = await client.request(method, f"/v1/items/{ITEM}/{path}")
        assert answer.status == 503, (method, path)
    batch = {"ops": [{"op": "like", "type": "post", "id": "7", "user": "4"}]}
    assert (await client.post("/v1/batch", json=batch)).status == 503
    assert (await client.post(f"/v1/items/{ITEM}/counters/views", json={"delta": 10})).status == 503

    body = await (await client.get(f"/v1/items/{ITEM}")).json()
    assert (body["count"], body["counters"]) == (1, {})
    assert not (await (await client.get(f"/v1/items/{ITEM}/likes/2")).json())["liked"]
    assert store.drain_deltas() == []  # nothing for gossip
    assert store.drain_dirty() == {}  # nothing for the checkpoints
    assert store.fingerprint() == fingerprint  # nothing for anti-entropy or a flush
    assert store.staged_items == 0


async def test_a_counter_retried_after_its_refusal_counts_once(
    aiohttp_client: ClientFactory, app: web.Application
) -> None:
    client: Client = await aiohttp_client(app)
    path = f"/v1/items/{ITEM}/counters/views"
    assert (await (await client.post(path, json={"delta": 10})).json())["value"] == 10
    fill_disk(app)
    assert (await client.post(path, json={"delta": 10})).status == 503
    wal: WriteAheadLog = app[DURABILITY].wal
    await wait_for(lambda: wal.failure is None and app[STORE].writable, "the log to take writes again")
    assert (await (await client.post(path, json={"delta": 10})).json())["value"] == 20
    body = await (await client.get(f"/v1/items/{ITEM}")).json()
    assert body["counters"] == {"views": 20}


async def test_the_node_takes_writes_again_by_itself_under_a_new_writer(
    aiohttp_client: ClientFactory, app: web.Application, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client: Client = await aiohttp_client(app)
    store: LikeStore = app[STORE]
    wal: WriteAheadLog = app[DURABILITY].wal
    assert (await client.put(f"/v1/items/{ITEM}/likes/1")).status == 200
    writer = store.writer
    fill_disk(app)
    assert (await client.put(f"/v1/items/{ITEM}/likes/2")).status == 503
    assert wal.failure is not None and wal.failures == 1

    await wait_for(lambda: store.writable, "the log to take writes again")
    assert (wal.failure, wal.recoveries) == (None, 1)
    assert store.writer != writer  # no dot of the refused like can be minted again
    assert (await client.put(f"/v1/items/{ITEM}/likes/3")).status == 200
    assert (await (await client.get(f"/v1/items/{ITEM}")).json())["count"] == 2
    events = [r.__dict__ for r in caplog.records if r.__dict__.get("event", "").startswith("wal_")]
    assert [e["event"] for e in events] == ["wal_failed", "wal_recovered"]  # once each, not per write
    assert "No space left" in events[0]["error"] and events[1]["down_s"] >= 0
    await client.close()

    items = ItemStore(tmp_path / "wal")  # the clean stop flushed there
    recovery = WriteAheadLog(tmp_path / "wal").open(items.open())
    replayed = LikeStore("n1-0123456789abcdef.9")
    replayed.restore_stored(items.states())
    replayed.restore(recovery.deltas)
    assert set(replayed.likers(KEY, after=None, limit=10)[0]) == {1, 3}  # 2 was refused


async def test_a_write_level_above_one_waits_for_the_log_before_any_peer(
    aiohttp_client: ClientFactory, app: web.Application
) -> None:
    shipped: list[Any] = []
    durability = app[DURABILITY]

    async def replicate(items: Any, copies: int, timeout: float) -> int:
        shipped.append(items)
        return copies

    durability._replicate = replicate  # a peer that records what reached it
    durability._cluster_size = 3
    client: Client = await aiohttp_client(app)
    assert (await client.put(f"/v1/items/{ITEM}/likes/1?w=all")).status == 200
    assert len(shipped) == 1
    fill_disk(app)
    assert (await client.put(f"/v1/items/{ITEM}/likes/2?w=all")).status == 503
    assert len(shipped) == 1  # the refused like never left the node
