"""b. Anti-entropy: the bytes two in-process gossipers spend to repair one differing item (see the
package)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

from bench.cluster.report import GOALS
from bench.common import DEFAULT_OUT, eventually, host_info, run_async, write_json
from bench.launch import HOST, shipped_config, shipped_gossip
from gossip import Gossiper
from gossip.antientropy import SETTLE_INTERVALS
from node.config import ClusterConfig, NodeSpec
from node.process.server import gossip_config
from node.state.item import ItemKey
from node.state.store import LikeStore

#: Anti-entropy rounds tried before giving up on a repair, and the wait after each, in seconds.
AE_MAX_ROUNDS = 10
AE_ROUND_WAIT = 3.0


def _ae_gossiper(name: str, store: LikeStore, secret: bytes, seed: Gossiper | None) -> Gossiper:
    """A gossiper configured as a node of the shipped cluster file would be, on a free port, with no
    periodic anti-entropy: only the rounds the measurement starts send anti-entropy bytes. Deltas keep
    the shipped interval (anti-entropy leaves a key alone for a few of them after it changes)."""
    shipped = shipped_config()
    specs = [NodeSpec(name, HOST, http_port=1, gossip_port=0)]
    if seed is not None:
        specs.append(NodeSpec(seed.name, HOST, http_port=1, gossip_port=seed.address[1]))
    config = gossip_config(
        ClusterConfig(nodes=tuple(specs), gossip=shipped.gossip, api=shipped.api), specs[0], secret
    )
    quiet = dataclasses.replace(config, anti_entropy_interval=3600.0)
    return Gossiper(quiet, store, rng=random.Random(name))


def _ae_bytes(*gossipers: Gossiper) -> int:
    return sum(g.stats()["bytes_sent_anti_entropy"] for g in gossipers)


def _ae_rounds(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_rounds"] for g in gossipers)


async def _anti_entropy(items: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    # Writer ids shaped like a node's (name, 16 hex digits, incarnation): they are inside every state.
    store_a = LikeStore(f"a-{rng.getrandbits(64):016x}.1")
    store_b = LikeStore(f"b-{rng.getrandbits(64):016x}.1")
    keys = [ItemKey("ae", i) for i in range(items)]
    loading = time.perf_counter()
    for key in keys:
        for _ in range(rng.randint(1, 3)):
            store_a.like(key, rng.getrandbits(63))
    store_a.drain_deltas()  # the loaded state reaches B by merge below, not by gossip
    for key in keys:
        raw = key.to_bytes()
        state = store_a.state(raw)
        assert state is not None
        store_b.merge(raw, state)
    load_s = time.perf_counter() - loading
    if store_a.fingerprint() != store_b.fingerprint():
        raise RuntimeError("the two stores differ after loading")

    secret = random.Random(seed).randbytes(32)
    a = _ae_gossiper("a", store_a, secret, None)
    await a.start()
    b = _ae_gossiper("b", store_b, secret, a)
    try:
        await b.start()

        async def in_contact() -> bool:
            return a.stats()["members_alive"] == 1 and b.stats()["members_alive"] == 1

        contact, _ = await eventually(in_contact, timeout=10)
        if not contact:
            raise RuntimeError("the two gossipers did not see each other alive within 10 s")

        # An in-sync round first: what a round costs when nothing differs.
        before = _ae_bytes(a, b)
        in_sync_before = b.stats()["anti_entropy_in_sync"]
        a.anti_entropy_round()

        async def acknowledged_in_sync() -> bool:
            return b.stats()["anti_entropy_in_sync"] > in_sync_before

        await eventually(acknowledged_in_sync, timeout=AE_ROUND_WAIT, interval=0.005)
        await asyncio.sleep(0.1)
        in_sync_bytes = _ae_bytes(a, b) - before

        # One like only anti-entropy can carry: its delta is drained and dropped. Once it has settled,
        # A's sweep starts the round that repairs it; rounds are started here only if that did not.
        target, user = keys[rng.randrange(items)], rng.getrandbits(63)
        before, rounds_before, sweeps_before = _ae_bytes(a, b), _ae_rounds(a, b), _ae_sweeps(a, b)
        side_before = (_ae_bytes(a), _ae_bytes(b))
        repaired_before = _ae_repaired(a, b)
        started = time.perf_counter()
        store_a.like(target, user)
        store_a.drain_deltas()

        async def b_has_it() -> bool:
            return store_b.liked(target, user)

        settle = SETTLE_INTERVALS * shipped_gossip()["delta_interval_ms"] / 1000
        repaired, _ = await eventually(b_has_it, timeout=settle + AE_ROUND_WAIT, interval=0.002)
        rounds = 0
        while not repaired and rounds < AE_MAX_ROUNDS:
            if a.anti_entropy_round():
                rounds += 1
            repaired, _ = await eventually(b_has_it, timeout=AE_ROUND_WAIT, interval=0.002)
        repair_s = time.perf_counter() - started
        await asyncio.sleep(0.2)  # a push-pull round may end with a frame back to A: count it too
        spent = _ae_bytes(a, b) - before

        async def all_indexed() -> bool:  # every key indexed again once the changed one settled
            return bool(a.stats()["anti_entropy_keys_indexed"] == items)

        await eventually(all_indexed, timeout=AE_ROUND_WAIT, interval=0.01)
        return {
            "items": items,
            "load_s": load_s,
            "repaired": repaired,
            "converged": store_a.fingerprint() == store_b.fingerprint(),
            "bytes": spent,
            "bytes_by_side": {"a": _ae_bytes(a) - side_before[0], "b": _ae_bytes(b) - side_before[1]},
            "rounds": _ae_rounds(a, b) - rounds_before,
            "rounds_started_here": rounds,
            "sweeps": _ae_sweeps(a, b) - sweeps_before,
            "keys_repaired": _ae_repaired(a, b) - repaired_before,
            "repair_ms": repair_s * 1000,
            "in_sync_round_bytes": in_sync_bytes,
            "keys_indexed": a.stats()["anti_entropy_keys_indexed"],
        }
    finally:
        await b.stop()
        await a.stop()


def _ae_sweeps(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_sweeps"] for g in gossipers)


def _ae_repaired(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_keys_repaired"] for g in gossipers)


def anti_entropy(
    *, items: int = 100_000, quick: bool = False, out: Path | None = DEFAULT_OUT, seed: int = 5
) -> dict[str, Any]:
    """Anti-entropy bytes to repair one differing item among ``items``; writes ``anti_entropy.json``."""
    if quick:
        items = min(items, 10_000)
    host = host_info()
    figures = run_async(lambda: _anti_entropy(items, seed))
    results = {
        "measure": "anti_entropy",
        "quick": quick,
        "host": host,
        **figures,
        "goals": {"anti_entropy_bytes": GOALS["anti_entropy_bytes"]},
        "met": {
            "anti_entropy_bytes": figures["repaired"]
            and figures["converged"]
            and figures["bytes"] <= GOALS["anti_entropy_bytes"]
        },
    }
    write_json(out, "anti_entropy.json", results)
    return results
