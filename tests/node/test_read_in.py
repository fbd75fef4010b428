"""A member whose item store is bigger than what a start reads before serving, in a real cluster.

Three ``likes node`` processes on loopback, each reading only 100 items of its item store before it
serves (``storage.read_at_start``) and flushing every 50 changed items. One is stopped, misses likes,
and starts again: it serves while it reads the rest in, answers every item exactly meanwhile, and
converges with the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.processes import NodeProcesses

pytestmark = pytest.mark.cluster

NODES = ("n1", "n2", "n3")
ITEMS = 1_500
BATCH = 200


def like(nodes: NodeProcesses, node: str, ids: range, user_base: int) -> None:
    """One like per item, each by its own user, in acknowledged batches."""
    for start in range(ids.start, ids.stop, BATCH):
        chunk = range(start, min(start + BATCH, ids.stop))
        ops = [{"op": "like", "type": "post", "id": str(i), "user": str(user_base + i)} for i in chunk]
        nodes.call(node, "POST", "/v1/batch", {"ops": ops})


def views(nodes: NodeProcesses) -> list[dict[str, object]]:
    return [nodes.call(name, "GET", "/v1/cluster") for name in NODES]


def converged(nodes: NodeProcesses, likes: int) -> bool:
    seen = views(nodes)
    return len({view["fingerprint"] for view in seen}) == 1 and all(view["likes"] == likes for view in seen)


def counts(nodes: NodeProcesses, node: str, ids: range) -> list[int]:
    """The items' counts on ``node``, 500 a request."""
    found: list[int] = []
    for start in range(ids.start, ids.stop, 500):
        items = [{"type": "post", "id": i} for i in range(start, min(start + 500, ids.stop))]
        found += [int(count) for count in nodes.call(node, "POST", "/v1/counts", {"items": items})["counts"]]
    return found


def test_a_member_reading_its_item_store_in_serves_exactly_and_converges(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path, NODES, extra="storage: {read_at_start: 100, flush_items: 50}")
    try:
        nodes.start_all()
        like(nodes, "n1", range(ITEMS), 1_000_000)
        nodes.eventually(lambda: converged(nodes, ITEMS), "every node holds every like")
        nodes.eventually(
            lambda: nodes.call("n2", "GET", "/v1/cluster")["wal"]["item_store"]["items_written"] >= ITEMS,
            "n2 flushed every item to its item store",
        )
        assert nodes.stop("n2") == 0
        like(nodes, "n1", range(200), 2_000_000)  # n2 misses these: peers bring them back

        nodes.start("n2")
        held = counts(nodes, "n2", range(ITEMS))  # at once: an item not read in yet is read when asked
        assert held[200:] == [1] * (ITEMS - 200)
        assert all(count in (1, 2) for count in held[:200])  # the missed like comes from a peer
        nodes.eventually(lambda: converged(nodes, ITEMS + 200), "n2 converges with its peers")
        assert counts(nodes, "n2", range(ITEMS)) == [2 if i < 200 else 1 for i in range(ITEMS)]
        assert nodes.request("n2", "GET", "/readyz")[0] == 200
        assert "the rest is read in while serving" in nodes.log("n2").read_text()
        assert nodes.call("n2", "GET", "/v1/cluster")["wal"]["item_store"]["loaded_items"] == ITEMS
    finally:
        nodes.stop_all()
