"""``GET /dashboard`` and ``GET /v1/dashboard``: the page is self-contained, the data gathers every node
(a node that does not answer is down, never a 500), rates and the convergence lag are what
``node/http/dashboard.py`` defines, and one gathering serves every viewer.

Peers are real HTTP servers on loopback: other node apps, and small servers that misbehave in the
ways a peer can (an error status, not JSON, too slow); one test runs two ``likes node`` processes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.http.api import DURABILITY, METRICS
from node.http.dashboard import DASHBOARD, MAX_SAMPLE_GAP, ConvergenceWatch, Dashboard
from tests.node.conftest import Client, ClientFactory, free_ports, make_app
from tests.node.processes import NodeProcesses

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
LIKE = "/v1/items/post/1/likes/{user}"


async def dashboard(client: Client) -> dict[str, Any]:
    response = await client.get("/v1/dashboard")
    assert response.status == 200 and response.content_type == "application/json"
    data: dict[str, Any] = await response.json()
    return data


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in data["nodes"]}


async def test_the_page_is_self_contained(client: Client) -> None:
    response = await client.get("/dashboard")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    assert "/*DASHBOARD_CSS*/" not in page and "/*DASHBOARD_JS*/" not in page  # both inlined
    assert 'fetch("/v1/dashboard"' in page and ".chart svg" in page
    for chart in ("like-rate", "convergence", "gossip", "wal", "checkpoint"):
        assert f'id="chart-{chart}"' in page
    # Nothing is loaded from anywhere else: no remote script, stylesheet, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)
    assert not re.search(r"""@import|url\(\s*["']?(https?:)?//""", page)


async def test_a_node_alone(client: Client) -> None:
    client.app[DASHBOARD].refresh_interval = 0.0
    first = await dashboard(client)
    assert first["node"] == "n1" and first["members"] == [{"name": "n1", "state": "alive"}]
    assert first["alive"] == 1 and first["agree"] is True and first["convergence_lag_s"] == 0
    (row,) = first["nodes"]
    assert row["up"] is True and row["error"] is None and row["local_likes"] == 0
    assert row["like_rate"] is None  # a rate needs two samples
    for user in (1, 2, 3):
        await client.put(LIKE.format(user=user))
    second = await dashboard(client)
    (row,) = second["nodes"]
    assert row["local_likes"] == 3 and row["likes_held"] == 3 and row["items"] == 1
    assert row["like_rate"] > 0 and row["wal_records"] == 3 and row["wal_fsync_p50_ms"] is not None
    assert [sample["nodes"]["n1"]["like_rate"] for sample in second["history"]] == [None, row["like_rate"]]


def misbehaving_peer(kind: str) -> web.Application:
    """A server whose ``GET /v1/cluster`` answers as a broken peer might."""

    async def cluster(request: web.Request) -> web.StreamResponse:
        if kind == "error":
            return web.json_response({"error": {"code": "internal"}}, status=500)
        if kind == "not json":
            return web.Response(text="<html>a proxy's error page</html>", content_type="text/html")
        if kind == "not a status":
            return web.json_response([1, 2, 3])
        await asyncio.sleep(2.0)  # "slow": past the dashboard's timeout
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/cluster", cluster)
    return app


async def test_members_that_do_not_answer_are_shown_down(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    peer = await aiohttp_server(make_app(tmp_path / "peer"))
    urls = {"n2": str(peer.make_url("")), "n3": f"http://127.0.0.1:{free_ports(1)[0]}"}
    for name, kind in (("n4", "error"), ("n5", "not json"), ("n6", "not a status"), ("n7", "slow")):
        urls[name] = str((await aiohttp_server(misbehaving_peer(kind))).make_url(""))
    app = make_app(tmp_path / "n1")
    board = app[DASHBOARD]
    board.member_urls.update(urls)
    board.fetch_timeout, board.refresh_interval = 0.3, 0.0
    client = await aiohttp_client(app)

    data = await dashboard(client)
    found = rows(data)
    assert sorted(found) == ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]
    assert found["n1"]["up"] and found["n2"]["up"]
    assert found["n3"]["error"].startswith("unreachable")
    assert found["n4"]["error"] == "answered HTTP 500"
    assert found["n5"]["error"] == "answered something other than JSON"
    assert found["n6"]["error"] == "answered something other than a cluster status"
    assert found["n7"]["error"] == "no answer within 300 ms"
    for name in ("n3", "n4", "n5", "n6", "n7"):
        assert found[name]["up"] is False and found[name]["fingerprint"] is None, name
    assert data["agree"] is True  # n1 and n2 both hold nothing: the same state
    assert found["n1"]["agrees"] and found["n2"]["agrees"]

    like = str(peer.make_url(LIKE.format(user=1)))
    async with aiohttp.ClientSession() as session, session.put(like) as response:
        assert response.status == 200  # n2 now holds a like n1 lacks
    found = rows(data := await dashboard(client))
    assert data["agree"] is False
    assert found["n1"]["agrees"] is True and found["n2"]["agrees"] is False  # a tie: this node's wins
    assert found["n2"]["local_likes"] == 1
    assert app[METRICS].internal_error_count() == 0


async def test_a_member_whose_log_failed_is_up_but_not_ready_with_the_reason(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    peer_app = make_app(tmp_path / "peer")
    peer = await aiohttp_server(peer_app)
    app = make_app(tmp_path / "n1")
    app[DASHBOARD].member_urls["n2"] = str(peer.make_url(""))
    app[DASHBOARD].refresh_interval = 0.0
    client = await aiohttp_client(app)
    reason = "the write-ahead log failed: [Errno 28] No space left on device"
    wal = peer_app[DURABILITY].wal
    wal.failure, wal.failed_since, wal.failures, wal.recoveries = reason, 1795417033.25, 3, 2

    found = rows(await dashboard(client))
    n1, n2 = found["n1"], found["n2"]
    assert n2["up"] is True and n2["error"] is None and n2["ready"] is False
    assert (n2["wal_failure"], n2["wal_failed_since"]) == (reason, 1795417033.25)
    assert (n2["wal_failures"], n2["wal_recoveries"]) == (3, 2)
    assert n1["ready"] is True and n1["wal_failure"] is None and n1["wal_failures"] == 0

    wal.failure, wal.failed_since, wal.recoveries = None, None, 3
    n2 = rows(await dashboard(client))["n2"]
    assert n2["ready"] is True and n2["wal_failure"] is None and n2["wal_recoveries"] == 3
    await peer.close()
    assert rows(await dashboard(client))["n2"]["ready"] is None  # down: not known


async def test_the_page_shows_a_node_that_refuses_writes(client: Client) -> None:
    page = await (await client.get("/dashboard")).text()
    assert 'id="alerts"' in page and ".state.not-ready" in page
    assert "node.ready === false" in page and '"not ready", "not-ready"' in page


async def test_one_gathering_serves_every_viewer(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    peer_app = make_app(tmp_path / "peer")
    asked: list[str] = []

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        asked.append(request.path)
        return await handler(request)

    peer_app.middlewares.append(count)
    peer = await aiohttp_server(peer_app)
    app = make_app(tmp_path / "n1")
    app[DASHBOARD].member_urls["n2"] = str(peer.make_url(""))
    app[DASHBOARD].refresh_interval = 0.5
    client = await aiohttp_client(app)
    answers = await asyncio.gather(*(dashboard(client) for _ in range(5)))
    assert asked == ["/v1/cluster"]  # five viewers, one request to the peer
    assert len({answer["time"] for answer in answers}) == 1
    await asyncio.sleep(0.55)
    await dashboard(client)
    assert asked == ["/v1/cluster"] * 2


def test_convergence_lag_counts_since_the_nodes_last_agreed() -> None:
    watch = ConvergenceWatch()
    assert watch.observe(True, 100.0) == 0
    assert watch.observe(False, 101.0) == 1.0  # they agreed at 100: disagreeing for at most 1 s
    assert watch.observe(False, 103.5) == 3.5
    assert watch.observe(True, 104.0) == 0
    assert watch.observe(False, 105.0) == 1.0
    # Nobody watched for a while: whether they agreed meanwhile is unknown, the lag starts afresh.
    later = 105.0 + MAX_SAMPLE_GAP + 1
    assert watch.observe(False, later) == 0
    assert watch.observe(False, later + 2) == 2.0


async def test_rates_are_the_change_between_two_samples() -> None:
    now = [0.0]
    status: dict[str, Any] = {
        "fingerprint": "f" * 32,
        "members": [{"name": "n1", "state": "alive"}],
        "writes": {"like": 0},
        "gossip": {"bytes_sent": 0, "bytes_received": 0},
    }
    async def local_status() -> dict[str, Any]:
        return status

    board = Dashboard("n1", local_status, {}, refresh_interval=0.0, clock=lambda: now[0])

    async def sample(at: float, likes: int, traffic: int) -> dict[str, Any]:
        now[0] = at
        status["writes"] = {"like": likes}
        status["gossip"] = {"bytes_sent": traffic // 2, "bytes_received": traffic - traffic // 2}
        (row,) = (await board.snapshot())["nodes"]
        return dict(row)

    assert (await sample(10.0, 0, 0))["like_rate"] is None
    second = await sample(12.0, 10, 1000)
    assert second["like_rate"] == 5.0 and second["gossip_bytes_rate"] == 500.0
    restarted = await sample(13.0, 2, 100)  # totals went down: the node restarted, count from zero
    assert restarted["like_rate"] == 2.0 and restarted["gossip_bytes_rate"] == 100.0
    assert len(board.history) == 3


@pytest.mark.cluster
def test_a_real_cluster_through_one_node(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path, ("n1", "n2"))
    try:
        nodes.start_all()
        data = nodes.call("n1", "GET", "/v1/dashboard")
        assert data["alive"] == 2 and [row["up"] for row in data["nodes"]] == [True, True]
        assert [row["url"] for row in data["nodes"]] == [nodes.urls["n1"], nodes.urls["n2"]]
        nodes.call("n2", "PUT", LIKE.format(user=5))

        def n1_sees_n2s_like() -> bool:
            data = nodes.call("n1", "GET", "/v1/dashboard")
            return rows(data)["n2"]["local_likes"] == 1 and data["agree"] is True

        nodes.eventually(n1_sees_n2s_like, "n1's dashboard shows n2's like, and the nodes agree")
        nodes.kill("n2")
        nodes.eventually(
            lambda: rows(nodes.call("n1", "GET", "/v1/dashboard"))["n2"]["up"] is False, "n2 shown down"
        )
        nodes.eventually(
            lambda: nodes.call("n1", "GET", "/v1/dashboard")["alive"] == 1, "n1 stops counting n2 alive"
        )
    finally:
        nodes.stop_all()
