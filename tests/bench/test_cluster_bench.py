"""The cluster measurements run end to end in quick mode, on real processes over loopback.

Figures are checked for presence and sanity (positive, ordered, counts exact), never for speed: how
fast a shared CI machine is says nothing about the code, and bench/ reports speed against the goals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import cluster, launch
from bench.__main__ import main
from bench.cluster.gossip_bytes import user_id
from bench.launch import LocalCluster, get_json

pytestmark = pytest.mark.cluster


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_local_cluster_starts_every_node_alive_and_stops(tmp_path: Path) -> None:
    with LocalCluster(2, tmp_path, gossip={"delta_interval_ms": 20}) as running:
        assert len(running.urls) == 2
        views = [get_json(f"{url}/v1/cluster") for url in running.urls]
        assert all([m["state"] for m in view["members"]] == ["alive", "alive"] for view in views)
        assert running.gossip["delta_interval_ms"] == 20
        assert running.gossip["anti_entropy_interval_ms"] == 1000  # the rest is the shipped file's
        assert running.config is not None and "secret_env" in running.config.read_text()
        process = running.process
    assert process is not None and process.poll() is not None
    with pytest.raises(ValueError, match=r"gossip\.delta_ms: unknown key"):
        LocalCluster(1, tmp_path, gossip={"delta_ms": 1})


def test_quick_propagation_reports_percentiles_for_3_and_5_nodes(tmp_path: Path) -> None:
    results = cluster.propagation(quick=True, out=tmp_path)
    assert results["gossip"]["delta_interval_ms"] > 0
    for n in (3, 5):
        figures = results["clusters"][str(n)]
        assert figures["samples"] == 20 and len(figures["raw"]) == 20
        assert figures["missed"] == 0
        assert positive(figures["p50_ms"])
        assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"] < results["timeout_ms"]
        assert sum(node["count"] for node in figures["per_node"].values()) == 20 * (n - 1)
        assert set(figures["per_node"]) <= {f"n{i + 1}" for i in range(n)}
        assert figures["any_peer"]["max_ms"] == figures["max_ms"]  # the slowest peer bounds both
        assert positive(figures["ack"]["p50_ms"])
        assert all(len(sample["delays_ms"]) == n - 1 for sample in figures["raw"])
    assert set(results["met"]) == {"3_nodes", "5_nodes"}
    assert json.loads((tmp_path / "propagation.json").read_text())["clusters"]["3"]["samples"] == 20
    table = cluster.render(results)
    assert table.count("propagation, ") == 4 and "p99" in table


def test_quick_anti_entropy_through_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["anti-entropy", "--quick", "--out", str(tmp_path)]) == 0  # quick mode exits 0 regardless
    assert "anti-entropy: repair 1 differing item among 10,000" in capsys.readouterr().out
    results = json.loads((tmp_path / "anti_entropy.json").read_text())
    assert results["repaired"] and results["converged"]
    assert positive(results["bytes"])
    assert results["bytes"] == results["bytes_by_side"]["a"] + results["bytes_by_side"]["b"]
    assert results["rounds"] >= 1
    assert results["rounds"] == results["sweeps"] + results["rounds_started_here"]  # no stray rounds
    assert results["keys_repaired"] >= 1
    assert positive(results["in_sync_round_bytes"]) and results["in_sync_round_bytes"] < results["bytes"]
    assert results["keys_indexed"] == results["items"] == 10_000


def test_quick_gossip_bytes_counts_every_like_exactly(tmp_path: Path) -> None:
    results = cluster.gossip_bytes(quick=True, out=tmp_path)
    load = results["load"]
    offered = results["rate"] * results["seconds"]
    assert load["ops_offered"] == offered == load["ops_acked"] == load["likes_applied"]
    assert load["batches_failed"] == 0
    assert positive(load["achieved_rate"]) and positive(load["offered_rate"])
    assert results["converged"] and results["counts_exact"]
    assert results["count_totals"] == [load["likes_applied"]] * results["nodes"]
    assert positive(results["delta_bytes_per_like_per_peer"])
    assert results["all_bytes_per_like_per_peer"] >= results["delta_bytes_per_like_per_peer"]
    spent = results["bytes"]
    assert positive(spent["bytes_sent_deltas"]) and positive(spent["bytes_sent_membership"])
    assert spent["bytes_sent"] >= spent["bytes_sent_deltas"] + spent["bytes_sent_membership"]
    assert set(results["health"]) >= {"deltas_unsent", "probe_failures", "members_suspected"}
    assert all(value >= 0 for value in results["health"].values())
    assert positive(results["delta_bytes_per_delta_sent"]) and results["delta_items_sent"] > 0
    assert set(results["cpu_during_load"]["cores"]) == {"n1", "n2", "n3", "load_generator"}
    assert (tmp_path / "gossip_bytes.json").exists()
    table = cluster.render(results)
    assert "gossip bytes per like per peer" in table and "exact" in table


def test_gossip_overrides_are_checked() -> None:
    assert launch.parse_overrides(["delta_interval_ms=20"]) == {"delta_interval_ms": 20}
    for bad in ("delta_interval_ms", "delta_interval_ms=fast", "nope=1"):
        with pytest.raises(ValueError):
            launch.parse_overrides([bad])


def test_user_ids_are_distinct_and_63_bit() -> None:
    ids = {user_id(i) for i in range(1, 10_001)}
    assert len(ids) == 10_000 and all(0 < u < 2**63 for u in ids)
