"""The like lane (``node.http.lane``): which heads it answers, and that its answers are the route's.

Every API test already runs through the lane (``tests/node/conftest.py`` serves apps through it);
these tests pin what is the lane's alone: reading heads, pipelining, handing a connection to aiohttp,
``Connection: close``, idle connections, and answers identical to the aiohttp route's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import HttpVersion10, HttpVersion11
from aiohttp.test_utils import TestServer

from node.http import causal, lane
from node.http.api import METRICS, STORE
from node.state.item import ItemKey
from tests.node.conftest import Client, ClientFactory, LaneTestServer, make_app

HEAD = b"PUT /v1/items/post/42/likes/7 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nContent-Length: 0"


@pytest.mark.parametrize(
    ("head", "liking", "user", "level", "close"),
    [
        (HEAD, True, 7, None, False),
        (b"DELETE /v1/items/post/42/likes/7?w=all HTTP/1.1", False, 7, "all", False),
        (b"PUT /v1/items/post/42/likes/7?w=1 HTTP/1.1\r\nConnection: close", True, 7, "1", True),
        (
            b"PUT /v1/items/post/42/likes/18446744073709551615 HTTP/1.1\r\nconnection: Keep-Alive",
            True,
            2**64 - 1,
            None,
            False,
        ),
    ],
)
def test_the_lane_reads_plain_like_heads(
    head: bytes, liking: bool, user: int, level: str | None, close: bool
) -> None:
    request = lane._read_head(head)
    assert request is not None
    assert (request.liking, request.key, request.user, request.level, request.close) == (
        liking,
        ItemKey("post", 42),
        user,
        level,
        close,
    )


def test_the_lane_reads_tokens_it_must_check() -> None:
    request = lane._read_head(HEAD + b"\r\nAuthorization: Bearer abc \r\nLikes-Causal-Token: tok")
    assert request is not None and request.authorization == "Bearer abc" and request.token == "tok"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/items/post/42/likes/7 HTTP/1.1",  # another route
        b"PUT /v1/items/post/42 HTTP/1.1",
        b"PUT /v1/items/post/42/likes/7 HTTP/1.0",  # not HTTP/1.1
        b"PUT /v1/items/Post/42/likes/7 HTTP/1.1",  # invalid values: aiohttp's 422
        b"PUT /v1/items/post/42/likes/18446744073709551616 HTTP/1.1",
        b"PUT /v1/items/post/%34%32/likes/7 HTTP/1.1",  # percent-encoded
        b"PUT /v1/items/post/42/likes/7?w=2 HTTP/1.1",  # any other query
        b"PUT /v1/items/post/42/likes/7?w=1&x=1 HTTP/1.1",
        b"PUT  /v1/items/post/42/likes/7 HTTP/1.1",
        HEAD.replace(b"Content-Length: 0", b"Content-Length: 2"),  # a body
        HEAD + b"\r\nTransfer-Encoding: chunked",
        HEAD + b"\r\nExpect: 100-continue",
        HEAD + b"\r\nUpgrade: websocket",
        HEAD + b"\r\nContent-Length: 0",  # repeated
        HEAD + b"\r\nConnection: upgrade",
        HEAD + b"\r\n folded",  # obsolete line folding
        HEAD + b"\r\nNo colon",
        HEAD + b"\r\nBad name: x",
        HEAD + b"\nBare: lf",
        HEAD + b"\r\nX: a\rb",
        HEAD + b"\r\nAuthorization: Bearer \xff",
    ],
)
def test_anything_else_is_left_to_aiohttp(head: bytes) -> None:
    assert lane._read_head(head) is None


# -- over a socket --------------------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LaneTestServer]:
    app = make_app(tmp_path)
    test_server = LaneTestServer(app)
    await test_server.start_server()
    yield test_server
    await test_server.close()
    assert app[METRICS].internal_error_count() == 0


Answer = tuple[bytes, dict[bytes, bytes], bytes]


async def exchange(server: TestServer, data: bytes, answers: int) -> list[Answer]:
    """Send ``data`` on one connection and read ``answers`` responses: (status line, headers, body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        return [await exchange_one(reader) for _ in range(answers)]
    finally:
        writer.close()


async def exchange_one(reader: asyncio.StreamReader) -> Answer:
    """Read one response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    body = await reader.readexactly(int(headers[b"content-length"]))
    return status, headers, body


def like(user: int, *extra: bytes) -> bytes:
    return b"\r\n".join((b"PUT /v1/items/post/1/likes/%d HTTP/1.1" % user, b"Host: x", *extra)) + b"\r\n\r\n"


async def test_pipelined_likes_are_answered_in_order(server: LaneTestServer) -> None:
    answers = await exchange(server, like(1) + like(2) + like(1) + like(3), 4)
    assert [orjson.loads(body) for _, _, body in answers] == [
        {"liked": True, "changed": True, "count": 1},
        {"liked": True, "changed": True, "count": 2},
        {"liked": True, "changed": False, "count": 2},
        {"liked": True, "changed": True, "count": 3},
    ]
    assert all(status == b"HTTP/1.1 200 OK" for status, _, _ in answers)
    assert all(headers[causal.HEADER.lower().encode()] for _, headers, _ in answers)
    assert server.site.lane.answered == 4 and server.site.lane.handed_over == 0


async def test_a_request_not_a_like_hands_the_connection_to_aiohttp(server: LaneTestServer) -> None:
    get = b"GET /v1/items/post/1 HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await exchange(server, like(1) + get + like(2), 3)
    assert [orjson.loads(body) for _, _, body in answers] == [
        {"liked": True, "changed": True, "count": 1},
        {"type": "post", "id": 1, "count": 1, "counters": {}},
        {"liked": True, "changed": True, "count": 2},  # answered by aiohttp's route
    ]
    assert server.site.lane.answered == 1 and server.site.lane.handed_over == 1
    assert b"server" in answers[2][1]  # aiohttp names itself; the lane does not


async def test_a_head_split_over_many_packets_is_answered(server: LaneTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for i in range(0, len(like(5)), 3):
            writer.write(like(5)[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()


async def test_an_oversized_head_is_left_to_aiohttp(server: LaneTestServer) -> None:
    answers = await exchange(server, like(1, b"X-Pad: " + b"a" * 100_000), 1)
    assert server.site.lane.handed_over == 1 and server.site.lane.answered == 0
    assert b"server" in answers[0][1]  # aiohttp's answer, by aiohttp's own limits


async def test_connection_close_is_honoured(server: LaneTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(like(1, b"Connection: close") + like(2))
        data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the lane closed
    finally:
        writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 1 and b"Connection: close" in data
    assert server.app is not None and server.app[STORE].count(ItemKey("post", 1)) == 1  # 2 not applied


async def test_idle_connections_are_closed(server: LaneTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(like(1))
        assert (await exchange_one(reader))[0] == b"HTTP/1.1 200 OK"
        loop = asyncio.get_running_loop()
        server.site.lane.close_idle(loop.time())
        assert len(server.site.lane.connections) == 1  # not idle long enough
        server.site.lane.close_idle(loop.time() + lane.IDLE_TIMEOUT + 1)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the lane
    finally:
        writer.close()


# -- the same answers as the aiohttp route ------------------------------------------------------------


async def answers_of(client: Client) -> list[tuple[int, object, bool]]:
    """Status, body and whether a causal token came back, for a sequence of likes and unlikes."""
    result = []
    for method, user in (("PUT", 1), ("PUT", 1), ("PUT", 2), ("DELETE", 1), ("DELETE", 1), ("DELETE", 9)):
        response = await client.request(method, f"/v1/items/post/3/likes/{user}")
        result.append((response.status, await response.json(), causal.HEADER in response.headers))
    for path in ("/v1/items/post/3/likes/5?w=all", "/v1/items/post/3/likes/5?w=majority"):
        response = await client.request("PUT", path)
        result.append((response.status, await response.json(), causal.HEADER in response.headers))
    return result


async def test_the_lane_answers_as_the_route_does(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    lane_app, route_app = make_app(tmp_path / "a"), make_app(tmp_path / "b")
    through_lane = await aiohttp_client(lane_app, version=HttpVersion11)
    through_route = await aiohttp_client(route_app, version=HttpVersion10)  # HTTP/1.0: never the lane's
    assert await answers_of(through_lane) == await answers_of(through_route)
    assert lane_app[STORE].fingerprint() == route_app[STORE].fingerprint()


async def test_plain_aiohttp_serving_still_answers_likes(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    app = make_app(tmp_path)
    client = await aiohttp_client(TestServer(app))  # no lane at all
    response = await client.put("/v1/items/post/1/likes/1")
    assert response.status == 200 and await response.json() == {"liked": True, "changed": True, "count": 1}


def test_status_lines_cover_every_error_the_api_raises() -> None:
    assert all(status in lane._STATUS_LINES for status in (200, 400, 401, 404, 413, 415, 422, 429, 500, 503))
    assert lane._status_line(299) == b"HTTP/1.1 299 Unknown\r\n"
