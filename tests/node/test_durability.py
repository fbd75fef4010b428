"""No loss: acknowledged likes survive kill -9, power loss and a torn log; write levels mean what they say.

Real ``likes node`` processes on loopback. Load runs in a bounded thread pool; each like is recorded as
acknowledged (200) or indeterminate (no answer: it may or may not have landed). The checks: every
acknowledged like is on every node (lost = 0) and no node holds a like never attempted (phantom = 0).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench import testnode
from node.durable.logframe import LOG_MAGIC
from node.durable.wal import DURABLE_MARK
from tests.node.processes import NodeProcesses

pytestmark = pytest.mark.cluster

NODES = ("n1", "n2", "n3")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeProcesses]:
    processes = NodeProcesses(tmp_path, NODES)
    processes.command = testnode.command(durable_mark=True)
    try:
        processes.start_all()
        yield processes
    finally:
        processes.stop_all()


class Load:
    """Likes of distinct users on one item through one node, until stopped (bounded in count)."""

    def __init__(self, nodes: NodeProcesses, node: str, item: str, first_user: int, limit: int) -> None:
        self.acked: set[int] = set()
        self.attempted: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = first_user
        self._last = first_user + limit
        self._nodes, self._node, self._item = nodes, node, item

    def _user(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= self._last:
                return None
            self._next += 1
            self.attempted.add(self._next)
            return self._next

    def _work(self) -> None:
        while (user := self._user()) is not None:
            try:
                code, _ = self._nodes.request(self._node, "PUT", f"/v1/items/{self._item}/likes/{user}")
            except OSError:
                continue  # indeterminate: the node died under us
            if code == 200:
                with self._lock:
                    self.acked.add(user)

    def run_until(self, acked: int, threads: int = 6) -> None:
        """Run until at least ``acked`` likes are acknowledged (the caller then kills the node)."""
        pool = ThreadPoolExecutor(threads)
        self._futures = [pool.submit(self._work) for _ in range(threads)]
        self._pool = pool
        self._nodes.eventually(lambda: len(self.acked) >= acked, f"{acked} likes acknowledged")

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def check_no_loss(nodes: NodeProcesses, item: str, load: Load) -> None:
    """Every acknowledged like on every node, nothing never attempted, all nodes equal."""
    for node in nodes.names:
        nodes.eventually(lambda n=node: load.acked <= nodes.likers(n, item), f"{node} has every acked like")
    nodes.eventually(
        lambda: len({frozenset(nodes.likers(n, item)) for n in nodes.names}) == 1, "every node agrees"
    )
    first = nodes.names[0]
    held = nodes.likers(first, item)
    assert held <= load.attempted, f"phantom likes: {sorted(held - load.attempted)[:5]}"
    assert nodes.call(first, "GET", f"/v1/items/{item}")["count"] == len(held)


def test_acknowledged_likes_survive_kill_9_of_the_acknowledging_node_repeatedly(
    nodes: NodeProcesses,
) -> None:
    rng = random.Random(4)
    for round_ in range(3):
        victim = rng.choice(NODES)
        load = Load(nodes, victim, f"post/{700 + round_}", 10_000 * round_, 5_000)
        load.run_until(acked=rng.randint(100, 300))
        nodes.kill(victim)
        load.stop()
        nodes.start(victim)
        check_no_loss(nodes, f"post/{700 + round_}", load)
        assert load.acked, "nothing was acknowledged: the test tested nothing"


def test_power_loss_cut_at_the_last_fsync_loses_no_acknowledged_like(tmp_path: Path) -> None:
    # A node alone: what it acknowledged can come back from its own disk only, not from peers.
    solo = NodeProcesses(tmp_path, ("solo",))
    solo.command = testnode.command(durable_mark=True)
    try:
        solo.start("solo")
        for round_ in range(3):
            load = Load(solo, "solo", f"post/{800 + round_}", 0, 5_000)
            load.run_until(acked=200)
            solo.kill("solo")
            load.stop()
            wal = solo.data_dir("solo") / "wal"
            name, offset = (wal / DURABLE_MARK).read_text().split()
            segment = wal / name
            assert segment.stat().st_size >= int(offset)
            with open(segment, "r+b") as handle:  # the page cache beyond the last fsync is gone
                handle.truncate(int(offset))
            solo.start("solo")
            check_no_loss(solo, f"post/{800 + round_}", load)
    finally:
        solo.stop_all()


def test_a_node_restarts_from_its_own_log_alone(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",))
    try:
        solo.start("solo")
        for user in range(50):
            solo.call("solo", "PUT", f"/v1/items/post/900/likes/{user}")
        solo.call("solo", "DELETE", "/v1/items/post/900/likes/7")
        solo.call("solo", "POST", "/v1/items/post/900/counters/views", {"delta": 12})
        solo.kill("solo")
        solo.start("solo")  # no peer to catch up from: everything comes from the log
        assert solo.likers("solo", "post/900") == set(range(50)) - {7}
        assert solo.call("solo", "GET", "/v1/items/post/900")["counters"] == {"views": 12}
        assert solo.call("solo", "GET", "/v1/users/3/likes")["items"] == [{"type": "post", "id": 900}]
        # A clean stop flushes to the item store and drops the log it covers; the next start reads it.
        solo.stop_all()
        wal = solo.data_dir("solo") / "wal"
        assert (wal / "items.db").exists()
        assert all(s.stat().st_size == len(LOG_MAGIC) for s in wal.glob("wal-*.log"))  # empty segments
        solo.start("solo")
        assert solo.likers("solo", "post/900") == set(range(50)) - {7}
    finally:
        solo.stop_all()


def test_a_torn_log_tail_is_reported_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",))
    try:
        solo.start("solo")
        for user in range(20):
            solo.call("solo", "PUT", f"/v1/items/post/901/likes/{user}")
        solo.kill("solo")
        (segment,) = sorted((solo.data_dir("solo") / "wal").glob("wal-*.log"))[-1:]
        with open(segment, "ab") as handle:
            handle.write(b"\x00\x00\x01\x00torn: half a record, then power went out")
        solo.start("solo")
        assert solo.likers("solo", "post/901") == set(range(20))
        assert "write-ahead log damaged" in solo.log("solo").read_text()
    finally:
        solo.stop_all()


def test_a_node_whose_data_dir_is_gone_starts_as_a_new_actor_and_its_likes_survive(
    nodes: NodeProcesses,
) -> None:
    for user in range(5):
        nodes.call("n3", "PUT", f"/v1/items/post/950/likes/{user}")
    old_actor = nodes.call("n3", "GET", "/v1/cluster")["node"]["actor"]
    nodes.eventually(lambda: len(nodes.likers("n1", "post/950")) == 5, "peers have n3's likes")
    nodes.kill("n3")
    for path in sorted(nodes.data_dir("n3").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    nodes.start("n3")
    assert nodes.call("n3", "GET", "/v1/cluster")["node"]["actor"] != old_actor
    # New likes from the reborn node are not swallowed by the dots peers saw from its old self.
    for user in range(5, 10):
        nodes.call("n3", "PUT", f"/v1/items/post/950/likes/{user}")
    for node in NODES:
        nodes.eventually(lambda n=node: nodes.likers(n, "post/950") == set(range(10)), f"{node} has all 10")


def test_write_levels_wait_for_peers_and_time_out_as_503_without_losing_the_write(
    nodes: NodeProcesses,
) -> None:
    assert nodes.call("n1", "PUT", "/v1/items/post/960/likes/1?w=all")["changed"] is True
    for node in ("n2", "n3"):  # w=all: the peers had it before the answer
        assert nodes.call(node, "GET", "/v1/items/post/960/likes/1") == {"liked": True}
    nodes.pause("n3")
    try:
        assert nodes.call("n1", "PUT", "/v1/items/post/960/likes/2?w=majority")["changed"] is True
        assert nodes.call("n2", "GET", "/v1/items/post/960/likes/2") == {"liked": True}
        body = nodes.call("n1", "PUT", "/v1/items/post/960/likes/3?w=all", status=503)
        assert body["error"]["code"] == "write_timeout"
        assert "durable on this node" in body["error"]["message"]
        assert nodes.call("n1", "GET", "/v1/items/post/960/likes/3") == {"liked": True}
    finally:
        nodes.resume("n3")
    nodes.eventually(
        lambda: nodes.call("n3", "GET", "/v1/items/post/960/likes/3") == {"liked": True},
        "the timed-out write reaches n3",
    )
    # Retrying the timed-out write once every peer is back confirms it.
    nodes.eventually(
        lambda: nodes.request("n1", "PUT", "/v1/items/post/960/likes/3?w=all")[0] == 200, "w=all retry"
    )
    body = nodes.call("n1", "PUT", "/v1/items/post/960/likes/4?w=two", status=422)
    assert body["error"]["code"] == "invalid"
    assert nodes.call("n1", "GET", "/v1/items/post/960/likes/4") == {"liked": False}


def test_a_write_level_that_too_few_live_peers_can_meet_is_answered_at_once_and_says_why(
    nodes: NodeProcesses,
) -> None:
    nodes.kill("n3")
    nodes.eventually(
        lambda: any(
            m["name"] == "n3" and m["state"] == "dead"
            for m in nodes.call("n1", "GET", "/v1/cluster")["members"]
        ),
        "n1 sees n3 dead",
    )
    began = time.monotonic()
    body = nodes.call("n1", "PUT", "/v1/items/post/961/likes/1?w=all", status=503)
    elapsed = time.monotonic() - began
    assert body["error"]["code"] == "write_timeout"
    message = body["error"]["message"]
    assert "2 peer(s) must confirm and only 1 is alive" in message and "did not wait" in message
    assert "2000 ms" not in message and elapsed < 1.0  # the write timeout is 2 s: it was not waited for
    assert nodes.call("n1", "GET", "/v1/items/post/961/likes/1") == {"liked": True}  # durable here
    nodes.eventually(
        lambda: nodes.call("n2", "GET", "/v1/items/post/961/likes/1") == {"liked": True}, "it spreads to n2"
    )


def _member(nodes: NodeProcesses, viewer: str, name: str) -> dict[str, object]:
    """How ``viewer`` sees member ``name`` (``GET /v1/cluster``)."""
    members = nodes.call(viewer, "GET", "/v1/cluster")["members"]
    return next(m for m in members if m["name"] == name)
