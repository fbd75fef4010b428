"""``GET /v1/events`` (``node.http.live``): live counts as Server-Sent Events, over one node's test client.

A like on this node and a like merged from another node's store (what gossip does) each reach the
stream; bad input is a JSON error, never a 500; the stream cap answers 429; a stream ends at its
lifetime and at shutdown; the poller runs only while a stream is open.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse

from node.http.api import METRICS, STORE
from node.http.live import LIVE_HUB
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.node.conftest import Client, ClientFactory, make_app
from tests.node.processes import DIRECT, NodeProcesses

SSE = {"Accept": "text/event-stream"}
#: Longest wait for one event; the poller looks every 0.1 s, so only a starved machine comes near this.
EVENT_TIMEOUT = 10.0


async def next_event(response: ClientResponse, timeout: float = EVENT_TIMEOUT) -> tuple[str, Any]:
    """The next event of the stream (name, decoded data), skipping keepalive comments."""
    async with asyncio.timeout(timeout):
        while True:
            block = (await response.content.readuntil(b"\n\n")).decode()
            name, data = "message", None
            for line in block.splitlines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = orjson.loads(line.removeprefix("data: "))
            if data is not None:
                return name, data


async def open_stream(client: Client, *items: str) -> ClientResponse:
    """A stream of ``items``, its ``hello`` already read and checked."""
    response = await client.get("/v1/events", params=[("item", item) for item in items], headers=SSE)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    name, hello = await next_event(response)
    assert (name, hello) == ("hello", {"node": "n1", "items": list(dict.fromkeys(items))})
    return response


async def test_a_stream_starts_with_the_counts_and_sends_each_like_of_its_items(client: Client) -> None:
    assert (await client.put("/v1/items/demo/1/likes/7")).status == 200
    stream = await open_stream(client, "demo:1", "demo:2")
    assert await next_event(stream) == ("counts", {"counts": {"demo:1": 1, "demo:2": 0}})

    assert (await client.put("/v1/items/demo/3/likes/8")).status == 200  # not watched: no event
    assert (await client.put("/v1/items/demo/2/likes/8")).status == 200
    assert await next_event(stream) == ("counts", {"counts": {"demo:2": 1}})
    assert (await client.delete("/v1/items/demo/1/likes/7")).status == 200
    assert await next_event(stream) == ("counts", {"counts": {"demo:1": 0}})
    stream.close()


async def test_a_like_merged_from_another_node_reaches_the_stream(client: Client) -> None:
    """Gossip merges another node's delta into the store; nobody calls the hub, the poller sees it."""
    stream = await open_stream(client, "demo:1")
    assert await next_event(stream) == ("counts", {"counts": {"demo:1": 0}})
    other = LikeStore("n2-0123456789abcdef.1")
    for user in (1, 2, 3):
        other.like(ItemKey("demo", 1), user)
    store = client.app[STORE]
    for raw, delta in other.drain_deltas():
        store.merge(raw, delta)
    assert await next_event(stream) == ("counts", {"counts": {"demo:1": 3}})
    stream.close()


async def test_a_burst_of_likes_arrives_as_few_events_ending_at_the_final_count(client: Client) -> None:
    stream = await open_stream(client, "demo:5")
    assert await next_event(stream) == ("counts", {"counts": {"demo:5": 0}})
    for user in range(20):
        assert (await client.put(f"/v1/items/demo/5/likes/{user}")).status == 200
    seen = []
    while not seen or seen[-1] != 20:
        _, data = await next_event(stream)
        seen.append(data["counts"]["demo:5"])
    assert seen == sorted(seen) and len(seen) < 20
    stream.close()


async def test_a_client_not_asking_for_a_stream_gets_the_counts_once_as_json(client: Client) -> None:
    assert (await client.put("/v1/items/demo/1/likes/7")).status == 200
    response = await client.get("/v1/events?item=demo:1&item=demo:9&item=demo:1")
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == {"node": "n1", "counts": {"demo:1": 1, "demo:9": 0}}


async def test_bad_input_is_a_json_error_and_opens_no_stream(client: Client) -> None:
    too_many = "&".join(f"item=demo:{i}" for i in range(33))
    cases = [
        ("/v1/events", 400, "malformed"),
        ("/v1/events?items=demo:1", 400, "malformed"),
        ("/v1/events?item=", 422, "invalid"),
        ("/v1/events?item=demo", 422, "invalid"),
        ("/v1/events?item=Demo:1", 422, "invalid"),
        ("/v1/events?item=demo:-1", 422, "invalid"),
        ("/v1/events?item=demo:18446744073709551616", 422, "invalid"),
        ("/v1/events?item=demo:1:2", 422, "invalid"),
        ("/v1/events?item=demo:1&item=" + "x" * 5000, 422, "invalid"),
        (f"/v1/events?{too_many}", 422, "invalid"),
    ]
    for headers in ({}, SSE):
        for path, status, code in cases:
            response = await client.get(path, headers=headers)
            assert response.status == status, (path, await response.text())
            assert response.content_type == "application/json"
            body = await response.json()
            assert body["error"]["code"] == code and body["error"]["message"], (path, body)
    assert client.app[LIVE_HUB].open_streams == 0
    assert (await client.get("/v1/events?item=demo:18446744073709551615")).status == 200
    assert (await client.head("/v1/events?item=demo:1", headers=SSE)).status == 405
    assert (await client.post("/v1/events?item=demo:1")).status == 405


async def test_streams_past_the_cap_get_429_until_one_closes(client: Client) -> None:
    hub = client.app[LIVE_HUB]
    hub.max_streams = 2
    first = await open_stream(client, "demo:1")
    second = await open_stream(client, "demo:1")
    refused = await client.get("/v1/events?item=demo:1", headers=SSE)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "too_many_streams"
    assert hub.open_streams == 2

    first.close()  # the poller notices the hung-up client and its stream ends
    async with asyncio.timeout(EVENT_TIMEOUT):
        while hub.open_streams != 1:
            await asyncio.sleep(0.02)
    third = await open_stream(client, "demo:2")
    assert hub.open_streams == 2
    second.close()
    third.close()


async def test_the_poller_runs_only_while_a_stream_is_open(client: Client) -> None:
    hub = client.app[LIVE_HUB]
    assert not hub.polling
    stream = await open_stream(client, "demo:1")
    assert hub.polling
    stream.close()
    async with asyncio.timeout(EVENT_TIMEOUT):
        while hub.polling or hub.open_streams:
            await asyncio.sleep(0.02)


async def test_a_stream_ends_at_its_lifetime(client: Client) -> None:
    client.app[LIVE_HUB].lifetime = 0.3
    stream = await open_stream(client, "demo:1")
    await next_event(stream)
    async with asyncio.timeout(EVENT_TIMEOUT):
        assert await stream.content.read() == b""  # the end of the stream: the browser reconnects
    assert client.app[LIVE_HUB].open_streams == 0


async def test_keepalives_flow_while_nothing_changes(client: Client) -> None:
    client.app[LIVE_HUB].keepalive = 0.1
    stream = await open_stream(client, "demo:1")
    await next_event(stream)
    async with asyncio.timeout(EVENT_TIMEOUT):
        assert await stream.content.readuntil(b"\n\n") == b": keepalive\n\n"
    stream.close()


async def test_shutdown_ends_open_streams_at_once(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = await aiohttp_client(app)
    streams = [await open_stream(client, "demo:1") for _ in range(3)]
    for stream in streams:
        await next_event(stream)
    await app.shutdown()  # what aiohttp runs before it waits for open requests to finish
    async with asyncio.timeout(EVENT_TIMEOUT):
        for stream in streams:
            assert await stream.content.read() == b""
    assert app[LIVE_HUB].open_streams == 0 and not app[LIVE_HUB].polling
    refused = await client.get("/v1/events?item=demo:1", headers=SSE)
    assert refused.status == 429
    assert app[METRICS].internal_error_count() == 0


@pytest.mark.cluster
def test_a_node_with_open_streams_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM a real node while a browser-like client follows its stream: the stream ends and the
    process exits well within aiohttp's 5 s shutdown timeout."""
    nodes = NodeProcesses(tmp_path, ("n1",))
    try:
        nodes.start_all()
        request = urllib.request.Request(f"{nodes.urls['n1']}/v1/events?item=demo:1", headers=SSE)
        with DIRECT.open(request, timeout=10) as stream:
            assert stream.readline() == b"retry: 1000\n"
            process = nodes.processes["n1"]
            stopping = time.monotonic()
            process.terminate()
            assert stream.read().endswith(b"\n\n")  # the rest of the stream, then its end
            process.wait(timeout=10)
            took = time.monotonic() - stopping
        assert process.returncode == 0 and took < 3.0, took
    finally:
        nodes.stop_all()
