"""The checker: every node's state after the heal against the history (see the package), and how long
the nodes took to agree."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.faults.cluster import Cluster, get_json
from bench.faults.history import Op, Pair
from bench.faults.settings import CONTENT_TYPE


@dataclass
class NodeItem:
    """What one node says of one item: its liker list (in order, as paged) and its counts."""

    likers: list[int]
    count: int
    batch_count: int


def possible_states(pair: Pair) -> set[bool]:
    """Whether ``pair`` may end liked (True) and/or unliked (False), given what the client learned.

    The last acknowledged operation decides; any indeterminate operation may have landed at any
    time after it was sent, so its outcome stays possible too. Failed and refused operations never
    happened.
    """
    acked = [op for op in pair.ops if op.outcome == "ok"]
    states = {acked[-1].kind == "like"} if acked else {False}
    states |= {op.kind == "like" for op in pair.ops if op.outcome == "info"}
    return states


@dataclass
class Verdict:
    """The checker's findings; ``examples`` holds a few of each for the report."""

    operations: int = 0
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    #: Operations answered 503 not_durable, and pairs where one of them shows (counted in ``phantom``).
    refused: int = 0
    refused_visible: int = 0
    pairs: int = 0
    lost: int = 0
    phantom: int = 0
    count_mismatches: int = 0
    duplicate_likers: int = 0
    unequal_items: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, what: str, example: str) -> None:
        found = self.examples.setdefault(what, [])
        if len(found) < 5:
            found.append(example)

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.phantom or self.count_mismatches or self.duplicate_likers or self.unequal_items
        )


def check(pairs: list[Pair], states: dict[str, dict[int, NodeItem]]) -> Verdict:
    """Compare every node's state with the history: lost, phantom, counts, duplicates, equality.

    Lost and phantom are counted once per pair (on the first node; the nodes must be equal, and
    ``unequal_items`` says where they are not), over the pairs that got at least one operation.
    """
    verdict = Verdict()
    ops = [op for pair in pairs for op in pair.ops]
    verdict.operations = len(ops)
    outcomes = Counter(op.outcome for op in ops)
    verdict.acknowledged, verdict.failed, verdict.indeterminate = (
        outcomes["ok"],
        outcomes["fail"],
        outcomes["info"],
    )
    verdict.refused = outcomes["refused"]
    touched = [pair for pair in pairs if pair.ops]
    verdict.pairs = len(touched)
    for node, node_items in states.items():
        for item, held in node_items.items():
            if len(held.likers) != len(set(held.likers)):
                verdict.duplicate_likers += 1
                verdict.note("duplicate_likers", f"{node} item {item}")
            if not held.count == held.batch_count == len(set(held.likers)):
                verdict.count_mismatches += 1
                verdict.note(
                    "count_mismatches",
                    f"{node} item {item}: count {held.count}, /v1/counts {held.batch_count}, "
                    f"{len(set(held.likers))} likers",
                )
    first = next(iter(states))
    for item in sorted({item for node_items in states.values() for item in node_items}):
        sets = {node: frozenset(states[node].get(item, NodeItem([], 0, 0)).likers) for node in states}
        if len(set(sets.values())) > 1:
            verdict.unequal_items += 1
            verdict.note(
                "unequal_items", f"item {item}: " + ", ".join(f"{n} {len(s)}" for n, s in sets.items())
            )
    held_by = {item: set(node_item.likers) for item, node_item in states[first].items()}
    explained: dict[int, set[int]] = {}
    for pair in touched:
        explained.setdefault(pair.item, set()).add(pair.user)
        present = pair.user in held_by.get(pair.item, set())
        possible = possible_states(pair)
        if present not in possible:
            history = " ".join(f"{op.kind}@{op.node}:{op.outcome}" for op in pair.ops)
            if refused_effect(pair, present) is not None:
                verdict.phantom += 1
                verdict.refused_visible += 1
                verdict.note("refused_visible", f"item {pair.item} user {pair.user}: {history}")
            elif present:
                verdict.phantom += 1
                verdict.note("phantom", f"item {pair.item} user {pair.user}: {history}")
            else:
                verdict.lost += 1
                verdict.note("lost", f"item {pair.item} user {pair.user}: {history}")
    for item, users in held_by.items():
        for user in sorted(users - explained.get(item, set())):
            verdict.phantom += 1
            verdict.note("phantom", f"item {item} user {user}: never attempted")
    return verdict


def refused_effect(pair: Pair, present: bool) -> Op | None:
    """A refused operation whose effect is what the node holds (a refused like and the liker present,
    a refused unlike and the liker gone), sent after the last acknowledged operation of its kind (none
    re-did it), else None. Only called when the history cannot explain ``present`` otherwise; an
    acknowledged operation of the other kind after it does not excuse it (an unlike acknowledged by a
    node that did not hold the refused like, which then came back from a peer, say)."""
    kind = "like" if present else "unlike"
    redone = max((i for i, op in enumerate(pair.ops) if op.outcome == "ok" and op.kind == kind), default=-1)
    for op in pair.ops[redone + 1 :]:
        if op.outcome == "refused" and op.kind == kind:
            return op
    return None


async def read_states(
    session: aiohttp.ClientSession, cluster: Cluster, items: int
) -> dict[str, dict[int, NodeItem]]:
    """Every node's likers (through the paginated list) and counts (item and batch endpoints)."""
    states: dict[str, dict[int, NodeItem]] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    for name in cluster.names:
        url = cluster.urls[name]
        body = {"items": [{"type": CONTENT_TYPE, "id": i} for i in range(items)]}
        async with session.post(f"{url}/v1/counts", json=body, timeout=timeout) as response:
            response.raise_for_status()
            batch = (await response.json())["counts"]
        node_items: dict[int, NodeItem] = {}
        for item in range(items):
            likers: list[int] = []
            after = ""
            for _ in range(10_000):
                async with session.get(
                    f"{url}/v1/items/{CONTENT_TYPE}/{item}/likes?limit=1000{after}", timeout=timeout
                ) as response:
                    response.raise_for_status()
                    page = await response.json()
                likers += page["likers"]
                if page["next"] is None:
                    break
                after = f"&after={page['next']}"
            async with session.get(f"{url}/v1/items/{CONTENT_TYPE}/{item}", timeout=timeout) as response:
                response.raise_for_status()
                count = (await response.json())["count"]
            node_items[item] = NodeItem(likers, count, batch[item])
        states[name] = node_items
    return states


async def convergence(
    session: aiohttp.ClientSession, cluster: Cluster, healed_at: float, timeout: float
) -> tuple[float | None, float | None]:
    """Seconds from ``healed_at`` until every node shows the same state fingerprint, and until every
    node sees every member alive (None: not within ``timeout``). In-flight operations count."""
    converged: float | None = None
    alive: float | None = None
    while time.monotonic() - healed_at < timeout and (converged is None or alive is None):
        views = await asyncio.gather(
            *(get_json(session, cluster.urls[n] + "/v1/cluster") for n in cluster.names)
        )
        now = time.monotonic() - healed_at
        if all(v is not None for v in views):
            if converged is None and len({v["fingerprint"] for v in views}) == 1:
                converged = now
            if alive is None and all(m["state"] == "alive" for v in views for m in v["members"]):
                alive = now
        await asyncio.sleep(0.05)
    return converged, alive
