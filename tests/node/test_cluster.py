"""A real three-node cluster started by ``likes up`` on loopback: replication, convergence, restarts.

One cluster serves the whole module (starting one takes about a second); each test uses items of its
own. Every wait is a poll bounded by ``CONVERGE_TIMEOUT``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.launch import LocalCluster, likes_command
from tests.node.processes import DIRECT, TEST_CLUSTER

pytestmark = pytest.mark.cluster

NODES = ("n1", "n2", "n3")
#: Longest wait for anything to converge or start, in seconds.
CONVERGE_TIMEOUT = 15.0
POLL = 0.05


class Cluster:
    """The running cluster as the tests see it: one URL per node and the ``likes up`` that runs them."""

    def __init__(self, up: LocalCluster) -> None:
        assert up.config is not None and up.log_path is not None
        self.up = up
        self.config = up.config
        self.log = up.log_path
        self.urls = dict(zip(up.names, up.urls, strict=True))

    def call(self, node: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """One request to one node; checks the status and returns the JSON body."""
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.urls[node] + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with DIRECT.open(request, timeout=5) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        assert code == status, (node, method, path, code, raw)
        return orjson.loads(raw)

    def reachable(self, node: str) -> bool:
        try:
            with DIRECT.open(self.urls[node] + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def eventually(self, check: Callable[[], bool], what: str, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(POLL)
        pytest.fail(f"not within {timeout} s: {what}")

    def everywhere(self, path: str, expected: Any, what: str = "") -> None:
        """Wait until every node answers ``GET path`` with ``expected``."""
        self.eventually(
            lambda: all(self.call(node, "GET", path) == expected for node in NODES),
            what or f"every node answers {path} with {expected}",
        )

    def fingerprints(self) -> set[str]:
        return {self.call(node, "GET", "/v1/cluster")["fingerprint"] for node in NODES}

    def stop(self) -> int | None:
        """SIGTERM ``likes up`` and return its exit status (SIGKILL after a bounded wait)."""
        return self.up.stop()


def start(root: Path, n_nodes: int) -> Cluster:
    """``likes up`` of a test cluster file, once every node serves and sees every member alive."""
    up = LocalCluster(n_nodes, root, start_timeout=2 * CONVERGE_TIMEOUT, **TEST_CLUSTER)
    up.start()
    return Cluster(up)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes on loopback with fast gossip timings, started by ``likes up``."""
    running = start(tmp_path_factory.mktemp("cluster"), len(NODES))
    try:
        yield running
    finally:
        running.stop()


def test_a_like_on_any_node_is_visible_on_all(cluster: Cluster) -> None:
    for i, node in enumerate(NODES):
        assert cluster.call(node, "PUT", f"/v1/items/post/{100 + i}/likes/1")["changed"]
    for i in range(3):
        cluster.everywhere(f"/v1/items/post/{100 + i}/likes/1", {"liked": True})
        cluster.everywhere(
            f"/v1/items/post/{100 + i}", {"type": "post", "id": 100 + i, "count": 1, "counters": {}}
        )


def test_the_same_user_liking_one_item_on_all_nodes_at_once_counts_once(cluster: Cluster) -> None:
    users = range(1, 21)
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(
            pool.map(
                lambda job: cluster.call(job[0], "PUT", f"/v1/items/post/200/likes/{job[1]}"),
                [(node, user) for user in users for node in NODES],
            )
        )
    cluster.everywhere("/v1/items/post/200", {"type": "post", "id": 200, "count": 20, "counters": {}})
    likers = {"type": "post", "id": 200, "count": 20, "likers": list(users), "next": None}
    cluster.everywhere("/v1/items/post/200/likes?limit=100", likers)


def test_unlike_converges(cluster: Cluster) -> None:
    cluster.call("n1", "PUT", "/v1/items/post/300/likes/305")
    cluster.call("n1", "PUT", "/v1/items/post/300/likes/306")
    cluster.everywhere("/v1/items/post/300", {"type": "post", "id": 300, "count": 2, "counters": {}})
    assert cluster.call("n3", "DELETE", "/v1/items/post/300/likes/305") == {
        "liked": False,
        "changed": True,
        "count": 1,
    }
    cluster.everywhere("/v1/items/post/300/likes/305", {"liked": False})
    cluster.everywhere("/v1/items/post/300", {"type": "post", "id": 300, "count": 1, "counters": {}})
    cluster.everywhere("/v1/users/305/likes", {"user": 305, "items": [], "next": None})


def test_batch_counts_likers_and_my_likes_work_across_nodes(cluster: Cluster) -> None:
    ops = [
        {"op": "like", "type": "photo", "id": item, "user": user} for item in (1, 2, 3) for user in (40, 41)
    ]
    ops.append({"op": "unlike", "type": "photo", "id": 3, "user": 41})
    results = cluster.call("n1", "POST", "/v1/batch", {"ops": ops})["results"]
    assert [r["changed"] for r in results] == [True] * 7
    items = [{"type": "photo", "id": i} for i in (1, 2, 3, 4)]
    cluster.eventually(
        lambda: cluster.call("n2", "POST", "/v1/counts", {"items": items}) == {"counts": [2, 2, 1, 0]},
        "counts on n2",
    )
    page = {"type": "photo", "id": 1, "count": 2, "likers": [40], "next": "40"}
    cluster.everywhere("/v1/items/photo/1/likes?limit=1", page)
    mine = [{"type": "photo", "id": 1}, {"type": "photo", "id": 2}]
    cluster.everywhere("/v1/users/41/likes", {"user": 41, "items": mine, "next": None})
    liked = {"user": 41, "liked": [True, True, False, False]}
    cluster.eventually(
        lambda: all(cluster.call(n, "POST", "/v1/users/41/liked", {"items": items}) == liked for n in NODES),
        "bulk has-liked on every node",
    )
    cluster.everywhere("/v1/users/40/likes?limit=2", {"user": 40, "items": mine, "next": "photo:2"})
    rest = cluster.call("n3", "GET", "/v1/users/40/likes?limit=2&after=photo:2")
    assert rest == {"user": 40, "items": [{"type": "photo", "id": 3}], "next": None}


def test_counters_add_up_across_nodes(cluster: Cluster) -> None:
    for node, delta in (("n1", 5), ("n2", 3), ("n3", -2)):
        cluster.call(node, "POST", "/v1/items/video/9/counters/views", {"delta": delta})
    cluster.everywhere("/v1/items/video/9", {"type": "video", "id": 9, "count": 0, "counters": {"views": 6}})


def test_bad_input_gets_a_4xx_json_error_and_changes_nothing(cluster: Cluster) -> None:
    cluster.eventually(lambda: len(cluster.fingerprints()) == 1, "earlier writes have converged")
    before = cluster.call("n1", "GET", "/v1/cluster")["fingerprint"]
    cases = [
        ("PUT", "/v1/items/post/1/likes/-1", None, 422),
        ("PUT", f"/v1/items/post/1/likes/{2**64}", None, 422),
        ("PUT", f"/v1/items/post/{2**64}/likes/1", None, 422),
        ("PUT", "/v1/items/Post!/1/likes/1", None, 422),
        ("POST", "/v1/batch", b"{not json", 400),
        ("POST", "/v1/batch", {"ops": [{"op": "like", "type": "post", "id": -5, "user": 1}]}, 422),
        ("POST", "/v1/batch", b"x" * (2 * 1024 * 1024), 413),
        ("PUT", "/v1/items/post/1/likes/1?w=most", None, 422),
    ]
    for method, path, body, status in cases:
        data = body if isinstance(body, bytes | None) else orjson.dumps(body)
        request = urllib.request.Request(cluster.urls["n2"] + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with DIRECT.open(request, timeout=5) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        assert code == status, (method, path, code, raw[:200])
        assert set(orjson.loads(raw)) == {"error"}
    time.sleep(0.2)  # anything a bad request had changed would have spread by now
    assert cluster.call("n1", "GET", "/v1/cluster")["fingerprint"] == before


def test_status_reports_members_and_agreement(cluster: Cluster) -> None:
    cluster.eventually(lambda: len(cluster.fingerprints()) == 1, "every node holds the same state")
    result = subprocess.run(
        [*likes_command(), "status", "--config", str(cluster.config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree: yes" in result.stdout
    matrix = re.findall(r"│ n\d +│ alive +│ alive +│ alive +│", result.stdout)  # how each sees the others
    assert len(matrix) == 3, result.stdout


def test_a_killed_node_is_restarted_and_catches_up_by_anti_entropy(cluster: Cluster) -> None:
    cluster.call("n2", "PUT", "/v1/items/post/500/likes/1")
    cluster.everywhere("/v1/items/post/500/likes/1", {"liked": True})
    before = cluster.call("n2", "GET", "/v1/cluster")["node"]
    os.kill(before["pid"], signal.SIGKILL)
    # While n2 is down (or just back and empty), the others take writes it can only get by anti-entropy.
    for user in range(10):
        cluster.call("n1" if user % 2 else "n3", "PUT", f"/v1/items/post/501/likes/{user}")
    cluster.eventually(
        lambda: (
            cluster.reachable("n2")
            and cluster.call("n2", "GET", "/v1/cluster")["node"]["pid"] != before["pid"]
        ),
        "the supervisor restarts n2",
    )
    after = cluster.call("n2", "GET", "/v1/cluster")["node"]
    # Its log replayed whole, so it resumes its writer: every dot it handed out is back in its state.
    assert (after["actor"], after["writer"]) == (before["actor"], before["writer"])
    cluster.everywhere("/v1/items/post/501", {"type": "post", "id": 501, "count": 10, "counters": {}})
    cluster.everywhere("/v1/items/post/500/likes/1", {"liked": True})
    cluster.everywhere("/v1/items/post/200", {"type": "post", "id": 200, "count": 20, "counters": {}})
    # Writes after the restart take dots past the old ones and survive the merge.
    cluster.call("n2", "PUT", "/v1/items/post/502/likes/77")
    cluster.call("n2", "POST", "/v1/items/post/502/counters/views", {"delta": 4})
    cluster.everywhere(
        "/v1/items/post/502", {"type": "post", "id": 502, "count": 1, "counters": {"views": 4}}
    )
    cluster.eventually(lambda: len(cluster.fingerprints()) == 1, "every node holds the same state")
    assert "restarted" in cluster.log.read_text()


def test_sigterm_stops_every_node_and_exits_0(cluster: Cluster) -> None:
    pids = [cluster.call(node, "GET", "/v1/cluster")["node"]["pid"] for node in NODES]
    assert cluster.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by likes up: the pid no longer exists
    assert not any(cluster.reachable(node) for node in NODES)


def test_nodes_stop_when_likes_up_is_killed(tmp_path: Path) -> None:
    solo = start(tmp_path, 1)
    try:
        pid = solo.call("n1", "GET", "/v1/cluster")["node"]["pid"]
        assert solo.up.process is not None
        solo.up.process.kill()
        solo.up.process.wait(timeout=10)
        solo.eventually(lambda: not _alive(pid), "the orphaned node stops", timeout=10)
    finally:
        solo.stop()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (the node was reparented when likes up died, so we cannot reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] not in "ZX"
    except FileNotFoundError:
        return False
