"""One scenario's record: everything measured as JSON, with the goals it is held to judged."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from bench.cluster.gossip_bytes import GOSSIP_COUNTERS
from bench.launch import LocalCluster
from bench.scenarios.spec import Scenario

GOALS: dict[str, float] = {
    "hot_post_seconds": 300.0,
    "sinks_exact_s": 60.0,
    "peak_p99_ms": 200.0,
    "batch_likes_per_s": 200_000.0,
    "bytes_per_held_like": 150.0,
    #: The memory goal is judged only once the nodes hold at least this many likes.
    "memory_goal_likes": 1_000_000,
}


def build_record(
    spec: Scenario,
    *,
    urls: Sequence[str],
    cluster: LocalCluster | None,
    names: Sequence[str],
    load: dict[str, Any],
    expected: Mapping[int, int],
    acked: Mapping[int, int],
    uncertain: Mapping[int, int],
    planned: Mapping[int, int] | None,
    populated: int,
    checked: Mapping[str, Any],
    stored: Mapping[str, Any] | None,
    views: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]],
    rss: tuple[Mapping[str, int | None], Mapping[str, int | None]],
) -> dict[str, Any]:
    """Everything measured as one JSON-able record, with the goals judged."""
    before, after = views
    spent = {
        key: sum(int(v["gossip"].get(key, 0)) for v in after)
        - sum(int(v["gossip"].get(key, 0)) for v in before)
        for key in GOSSIP_COUNTERS
    }
    writes = load["changes_acked"] if spec.shape != "counts" else 0
    peers = max(len(urls) - 1, 1)
    gossip = {
        "bytes": spent,
        "writes_applied": writes,
        "bytes_per_like": spent["bytes_sent"] / writes if writes else None,
        "bytes_per_like_per_peer": spent["bytes_sent"] / writes / peers if writes else None,
        "delta_bytes_per_like_per_peer": spent["bytes_sent_deltas"] / writes / peers if writes else None,
    }
    held_added = sum(acked.values())
    memory: dict[str, Any] = {"likes_added": held_added, "likes_held": sum(expected.values()), "nodes": {}}
    for name in names:
        start, end = rss[0].get(name), rss[1].get(name)
        growth = None if start is None or end is None else end - start
        memory["nodes"][name] = {
            "rss_before": start,
            "rss_after": end,
            "growth": growth,
            "bytes_per_held_like": growth / held_added if growth is not None and held_added > 0 else None,
        }
    per_like = [
        n["bytes_per_held_like"] for n in memory["nodes"].values() if n["bytes_per_held_like"] is not None
    ]
    memory["max_bytes_per_held_like"] = max(per_like) if per_like else None
    ops = "items counted" if spec.shape == "counts" else "likes" if spec.shape in ("like", "batch") else "ops"
    throughput = {
        "requests_per_s": load["achieved_rate"],
        "ops_per_s": load["ops_rate"],
        "ops": ops,
    }
    exactness = {
        **checked,
        "expected_total": sum(expected.values()),
        "uncertain_ops": sum(uncertain.values()),
        "planned_total": None if planned is None else sum(planned.values()),
        "planned_match": None if planned is None else all(acked.get(i, 0) == n for i, n in planned.items()),
        "sinks": stored,
    }
    if spec.users is not None:
        exactness["all_users_counted"] = checked["exact"] and all(
            node["total"] == spec.users for node in checked["nodes"].values()
        )
    record = {
        "scenario": spec.name,
        "config": dataclasses.asdict(spec),
        "nodes": len(urls),
        "urls": list(urls),
        "gossip_settings": cluster.gossip if cluster is not None else None,
        "sinks_enabled": stored is not None,
        "populated_likes": populated,
        "load": load,
        "throughput": throughput,
        "latency": load["latency"],
        "errors": load["errors"],
        "error_count": load["error_count"],
        "exactness": exactness,
        "gossip": gossip,
        "memory": memory,
        "checkpoint_lag": {v["node"]["name"]: v.get("checkpoint", {}) for v in after},
        "wal": {v["node"]["name"]: v.get("wal", {}) for v in after},
    }
    record["goals"], record["met"] = judge(spec, record)
    return record


def judge(spec: Scenario, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    """The goals this scenario is held to, and whether each was met."""
    exact = record["exactness"]
    clean = record["error_count"] == 0 and record["load"]["unchanged"] == 0
    goals: dict[str, Any] = {"zero_errors": 0, "exact_on_every_node": True}
    met: dict[str, bool] = {"zero_errors": clean, "exact_on_every_node": bool(exact["exact"])}
    sinks = exact.get("sinks")
    if sinks is not None:
        limit = GOALS["sinks_exact_s"]
        goals["sinks_exact_s"] = limit
        met["sinks_exact_s"] = all(
            sinks[name]["exact"] and sinks[name]["after_s"] <= limit for name in ("redis", "mysql")
        )
    if spec.users is not None:
        goals["all_users_counted"] = spec.users
        met["all_users_counted"] = bool(exact.get("all_users_counted"))
    if spec.name == "hot-post":
        goals["hot_post_seconds"] = GOALS["hot_post_seconds"]
        met["hot_post_seconds"] = record["load"]["elapsed_s"] <= GOALS["hot_post_seconds"]
    if spec.name == "peak":
        p99 = record["latency"]["p99_ms"]
        goals["peak_p99_ms"] = GOALS["peak_p99_ms"]
        met["peak_p99_ms"] = p99 is not None and p99 <= GOALS["peak_p99_ms"]
    if spec.name == "zipf":
        goals["planned_state"] = True
        met["planned_state"] = bool(exact["planned_match"])
    if spec.name == "batch":
        goals["batch_likes_per_s"] = GOALS["batch_likes_per_s"]
        met["batch_likes_per_s"] = record["throughput"]["ops_per_s"] >= GOALS["batch_likes_per_s"]
    memory = record["memory"]
    if memory["likes_added"] >= GOALS["memory_goal_likes"] and memory["max_bytes_per_held_like"] is not None:
        goals["bytes_per_held_like"] = GOALS["bytes_per_held_like"]
        met["bytes_per_held_like"] = memory["max_bytes_per_held_like"] <= GOALS["bytes_per_held_like"]
    return goals, met
