"""Micro-benchmarks of the CRDT core, each beside a plain-dict yardstick timed in the same run.

- add + delta throughput: ``ORSet.add`` (state change plus the delta it returns), ops/s;
- merge cost in ns per incoming entry: a peer's delta batch, and a full state, joined into a large
  replica, against a plain ``dict`` max-merge of the same number of entries;
- encoded bytes per element of a 1,000,000-user ORSet;
- memory per element of a 1,000,000-user ORSet (tracemalloc) against a ``dict[int, int]`` of the same
  size; both are built from the same pre-made user ids, so neither pays for its keys.

User ids are random 63-bit ints, as snowflake-style ids are: the worst case for encoded size.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crdt import ORSet, encode

GOALS = {"merge_ratio": 3.0, "encoded_bytes_per_element": 25.0, "memory_ratio": 1.6}


def _best_of(repeats: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeats))


def _users(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(63) for _ in range(n)]


def add_throughput(users: list[int]) -> float:
    """ops/s of ``add`` on a growing set, delta included."""

    def run() -> float:
        s = ORSet()
        add = s.add
        start = time.perf_counter()
        for user in users:
            add("n1", user)
        return time.perf_counter() - start

    return len(users) / _best_of(3, run)


def _dict_max_merge(target: dict[int, int], incoming: dict[int, int]) -> None:
    get = target.get
    for key, value in incoming.items():
        if value > get(key, 0):
            target[key] = value


def merge_costs(base_users: list[int], fresh_users: list[int]) -> dict[str, float]:
    """ns per incoming entry: a delta batch and a full state into a large replica, and the yardstick."""
    replica = ORSet()
    for user in base_users:
        replica.add("n1", user)
    peer = replica.copy()
    batch = ORSet()
    for user in fresh_users:
        batch.merge(peer.add("n2", user))  # what gossip ships in one interval
    full = peer.copy()
    # A batch with 20% unlikes of users the replica holds: removals found through the dot index.
    mixed_peer = replica.copy()
    mixed = ORSet()
    for i, user in enumerate(fresh_users):
        mixed.merge(mixed_peer.remove(base_users[i]) if i % 5 == 0 else mixed_peer.add("n3", user))
    warm_up = mixed_peer.remove(base_users[-1])

    def warm_replica() -> ORSet:
        """A long-lived replica has its dot index already; build it outside the timing."""
        target = replica.copy()
        target.merge(warm_up)
        return target

    base_dict = {user: i + 1 for i, user in enumerate(base_users)}
    fresh_dict = {user: i + 1 for i, user in enumerate(fresh_users)}
    full_dict = {**base_dict, **fresh_dict}

    def timed(setup: Callable[[], Any], merge: Callable[[Any], None], entries: int) -> float:
        def run() -> float:
            target = setup()
            gc.collect()
            start = time.perf_counter()
            merge(target)
            return time.perf_counter() - start

        return _best_of(5, run) / entries * 1e9

    delta_ns = timed(replica.copy, lambda t: t.merge(batch), len(fresh_users))
    mixed_ns = timed(warm_replica, lambda t: t.merge(mixed), len(fresh_users))
    full_ns = timed(replica.copy, lambda t: t.merge(full), len(full))
    dict_delta_ns = timed(base_dict.copy, lambda t: _dict_max_merge(t, fresh_dict), len(fresh_dict))
    dict_full_ns = timed(base_dict.copy, lambda t: _dict_max_merge(t, full_dict), len(full_dict))
    return {
        "delta_batch_ns_per_entry": delta_ns,
        "mixed_batch_ns_per_entry": mixed_ns,
        "mixed_batch_ratio": mixed_ns / dict_delta_ns,
        "full_state_ns_per_entry": full_ns,
        "dict_delta_batch_ns_per_entry": dict_delta_ns,
        "dict_full_state_ns_per_entry": dict_full_ns,
        "delta_batch_ratio": delta_ns / dict_delta_ns,
        "full_state_ratio": full_ns / dict_full_ns,
    }


def _traced_bytes(build: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        value = build()
        return value, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def size_and_memory(users: list[int]) -> dict[str, float]:
    """Encoded bytes and traced memory per element of one large set, and the dict yardstick."""

    def build_set() -> ORSet:
        s = ORSet()
        for user in users:
            s.add("n1", user)
        return s

    def build_dict() -> dict[int, int]:
        # Values like a liked-at timestamp in ms: distinct ints of the same width as our dots.
        start = 1_760_000_000_000
        return {user: start + i for i, user in enumerate(users)}

    s, set_bytes = _traced_bytes(build_set)
    _, dict_bytes = _traced_bytes(build_dict)
    encoded = len(encode(s))
    n = len(users)
    return {
        "elements": n,
        "encoded_bytes_per_element": encoded / n,
        "orset_bytes_per_element": set_bytes / n,
        "dict_bytes_per_element": dict_bytes / n,
        "memory_ratio": set_bytes / dict_bytes,
    }


def run(*, elements: int = 1_000_000, quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Run every measurement and return (and optionally write) the figures."""
    if quick:
        elements = 20_000
    users = _users(elements, seed=1)
    base = users[: max(1, elements // 10)]
    fresh = _users(1000 if not quick else 200, seed=2)
    results: dict[str, Any] = {"elements": elements, "quick": quick}
    results["add_ops_per_s"] = add_throughput(users[:200_000])
    results.update(merge_costs(base, fresh))
    results.update(size_and_memory(users))
    results["goals"] = GOALS
    results["met"] = {
        "merge_ratio": max(results[k] for k in ("delta_batch_ratio", "mixed_batch_ratio", "full_state_ratio"))
        <= GOALS["merge_ratio"],
        "encoded_bytes_per_element": results["encoded_bytes_per_element"]
        <= GOALS["encoded_bytes_per_element"],
        "memory_ratio": results["memory_ratio"] <= GOALS["memory_ratio"],
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "crdt.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def render(results: dict[str, Any]) -> str:
    """A markdown table of the figures."""
    r = results
    rows = [
        ("add + delta throughput", f"{r['add_ops_per_s']:,.0f} ops/s", ""),
        (
            f"merge a 1,000-like delta batch into a {r['elements'] // 10:,}-like set",
            f"{r['delta_batch_ns_per_entry']:.0f} ns/entry (dict: {r['dict_delta_batch_ns_per_entry']:.0f})",
            f"{r['delta_batch_ratio']:.2f}x dict (goal <= 3x)",
        ),
        (
            "the same batch with 20% unlikes (removals found by the dot index)",
            f"{r['mixed_batch_ns_per_entry']:.0f} ns/entry (dict: {r['dict_delta_batch_ns_per_entry']:.0f})",
            f"{r['mixed_batch_ratio']:.2f}x dict (goal <= 3x)",
        ),
        (
            "merge a full state into a replica holding 90% of it",
            f"{r['full_state_ns_per_entry']:.0f} ns/entry (dict: {r['dict_full_state_ns_per_entry']:.0f})",
            f"{r['full_state_ratio']:.2f}x dict (goal <= 3x)",
        ),
        (
            f"encoded size, {r['elements']:,}-user ORSet",
            f"{r['encoded_bytes_per_element']:.1f} B/element",
            "goal <= 25 B",
        ),
        (
            f"memory, {r['elements']:,}-user ORSet (tracemalloc)",
            f"{r['orset_bytes_per_element']:.1f} B/element "
            f"(dict[int, int]: {r['dict_bytes_per_element']:.1f})",
            f"{r['memory_ratio']:.2f}x dict (goal <= 1.6x)",
        ),
    ]
    lines = ["| measure | result | vs goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
