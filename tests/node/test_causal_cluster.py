"""Session causality on a real three-node cluster: one user's like on n1 and unlike on n2 stay in
order with the causal token, and may not without it.

Gossip is cut with the test fault layer (``gossip.faults``, on only because the nodes start through
``bench.testnode --faults`` with a control file): isolating n1 keeps its like from reaching anyone,
so an unlike on n2 finds nothing to remove unless it waits. One cluster serves the module; every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import testnode
from gossip import faults
from node.http.causal import HEADER
from tests.node.processes import DIRECT, NodeProcesses

pytestmark = pytest.mark.cluster

NAMES = ("n1", "n2", "n3")
#: ``api.causal_wait_ms`` of the test cluster: long enough for a heal and a pull on a busy machine.
WAIT_MS = 4000


class Causal(NodeProcesses):
    """The cluster, the fault plan, and requests that send and return the token header."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, NAMES, extra=f"api: {{causal_wait_ms: {WAIT_MS}}}\n")
        self.plan = root / "faults.json"
        self.command = testnode.command(faults=self.plan)
        self.gossip: dict[str, str] = {}

    def cut(self, *pairs: tuple[str, str]) -> None:
        """Gossip between each pair stops (both ways); no pairs heals everything."""
        temporary = self.plan.with_suffix(".tmp")
        temporary.write_text(json.dumps({"blocked": [[self.gossip[a], self.gossip[b]] for a, b in pairs]}))
        os.replace(temporary, self.plan)
        time.sleep(faults.RELOAD_INTERVAL * 4)  # every node has re-read it

    def isolate_n1(self) -> None:
        self.cut(("n1", "n2"), ("n1", "n3"))

    def send(
        self, node: str, method: str, path: str, token: str | None = None
    ) -> tuple[int, Any, str | None]:
        """(status, JSON body, the answer's token)."""
        request = urllib.request.Request(self.urls[node] + path, method=method)
        if token is not None:
            request.add_header(HEADER, token)
        try:
            with DIRECT.open(request, timeout=WAIT_MS / 1000 + 10) as response:
                return response.status, orjson.loads(response.read()), response.headers.get(HEADER)
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read()), exc.headers.get(HEADER)

    def liked_everywhere(self, item: str, user: int) -> list[bool]:
        return [self.call(n, "GET", f"/v1/items/{item}/likes/{user}")["liked"] for n in NAMES]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Causal]:
    nodes = Causal(tmp_path_factory.mktemp("causal"))
    try:
        nodes.start_all()
        nodes.gossip = {n: nodes.call(n, "GET", "/v1/cluster")["node"]["gossip"] for n in NAMES}
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture
def healed(cluster: Causal) -> Iterator[Causal]:
    """The cluster whole before and after the test."""
    cluster.cut()
    yield cluster
    cluster.cut()


def test_without_the_token_an_unlike_on_another_node_can_lose_to_the_like(healed: Causal) -> None:
    cluster = healed
    cluster.isolate_n1()
    status, liked, token = cluster.send("n1", "PUT", "/v1/items/post/101/likes/7")
    assert status == 200 and liked["changed"] and token
    status, unliked, _ = cluster.send("n2", "DELETE", "/v1/items/post/101/likes/7")  # no token
    assert status == 200 and unliked == {"liked": False, "changed": False, "count": 0}  # nothing to remove
    cluster.cut()
    cluster.eventually(lambda: cluster.liked_everywhere("post/101", 7) == [True] * 3, "the like spreads")
    time.sleep(0.5)
    assert cluster.liked_everywhere("post/101", 7) == [True] * 3  # the user's unlike is lost


def test_with_the_token_the_unlike_waits_for_the_like_and_wins(healed: Causal) -> None:
    cluster = healed
    cluster.isolate_n1()
    status, liked, token = cluster.send("n1", "PUT", "/v1/items/post/102/likes/7")
    assert status == 200 and liked["changed"] and token
    answers: list[tuple[int, Any, str | None]] = []
    unlike = threading.Thread(
        target=lambda: answers.append(cluster.send("n2", "DELETE", "/v1/items/post/102/likes/7", token))
    )
    started = time.monotonic()
    unlike.start()
    time.sleep(0.5)
    assert not answers, "the unlike did not wait for the like"
    cluster.cut(("n1", "n2"))  # n3 can reach n1 again; n2 still cannot: it must pull from n3
    unlike.join(timeout=WAIT_MS / 1000 + 15)
    assert answers, "the unlike never answered"
    status, unliked, after = answers[0]
    assert status == 200, unliked
    assert unliked == {"liked": False, "changed": True, "count": 0}
    assert time.monotonic() - started < WAIT_MS / 1000 + 1
    assert after and after != token  # now names the removed dot
    assert cluster.send("n2", "GET", "/v1/items/post/102/likes/7", after)[1] == {"liked": False}
    cluster.cut()
    cluster.eventually(lambda: cluster.liked_everywhere("post/102", 7) == [False] * 3, "the unlike spreads")
    time.sleep(0.5)
    assert cluster.liked_everywhere("post/102", 7) == [False] * 3
    assert [cluster.call(n, "GET", "/v1/items/post/102")["count"] for n in NAMES] == [0, 0, 0]


def test_a_token_whose_writes_never_arrive_is_a_503_within_the_wait(healed: Causal) -> None:
    cluster = healed
    cluster.isolate_n1()
    status, _, token = cluster.send("n1", "PUT", "/v1/items/post/103/likes/7")
    assert status == 200 and token
    for method, path in (("PUT", "/v1/items/post/103/likes/8"), ("GET", "/v1/items/post/103")):
        started = time.monotonic()
        status, body, answered = cluster.send("n2", method, path, token)
        took = time.monotonic() - started
        assert status == 503 and body["error"]["code"] == "causal_timeout", body
        assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + 2, took
        assert answered is None
    assert cluster.send("n2", "GET", "/v1/items/post/103/likes/8")[1] == {"liked": False}
    cluster.cut()
    cluster.eventually(lambda: cluster.liked_everywhere("post/103", 7) == [True] * 3, "the like spreads")
    # The refused like of user 8 never happened anywhere.
    assert cluster.liked_everywhere("post/103", 8) == [False] * 3
    assert [cluster.call(n, "GET", "/v1/items/post/103")["count"] for n in NAMES] == [1, 1, 1]
    status, _, _ = cluster.send("n2", "GET", "/v1/items/post/103", token)  # arrived: no wait now
    assert status == 200
