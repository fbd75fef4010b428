"""The workload scenarios run end to end in quick mode on real 3-node clusters, real Redis and MySQL.

Figures are checked for sanity (ordered percentiles, positive rates, RSS read) and, above all, for
exactness: every node, Redis and MySQL must hold exactly the state the load generator expects. Speed
is never asserted: a shared CI machine says nothing about the code. Redis or MySQL unreachable:
skipped locally, failed on CI.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import charts, scenarios
from bench.__main__ import main
from bench.common import run_async
from bench.launch import LocalCluster
from bench.load import UNLIKE_LAG, LoadSpec, ZipfPlan, populated_count
from bench.load.worker import Worker
from bench.scenarios.nodes import mismatches, until_exact
from bench.servers import Stores
from tests.node.checkpoint.conftest import MYSQL_SERVER_URL, REDIS_URL, server_unreachable

WRITES = ("hot-post", "hot-post-max", "peak", "zipf", "batch")


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Every scenario once in quick mode, through the command line (shared by the tests below)."""
    stores = Stores(REDIS_URL, MYSQL_SERVER_URL)
    problems = stores.reachable()
    if problems:
        server_unreachable("; ".join(problems.values()))
    out = tmp_path_factory.mktemp("scenarios")
    status = main(
        ["scenarios", "--quick", "--out", str(out), "--redis-url", REDIS_URL, "--mysql-url", MYSQL_SERVER_URL]
    )
    return out, status


def result_of(out: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / f"scenario-{name}.json").read_text())
    return result


@pytest.mark.cluster
def test_quick_scenarios_exit_0_and_write_every_report(quick_run: tuple[Path, int]) -> None:
    out, status = quick_run
    assert status == 0  # quick mode exits 0 whatever the figures
    for name in scenarios.ALL:
        assert (out / f"scenario-{name}.json").exists()
    table = (out / "scenarios.md").read_text()
    assert all(f"| {name} |" in table for name in scenarios.ALL)
    assert "Quick mode" in table
    assert (out / "scenarios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.cluster
@pytest.mark.parametrize("name", scenarios.ALL)
def test_every_quick_scenario_is_exact_on_every_node(quick_run: tuple[Path, int], name: str) -> None:
    result = result_of(quick_run[0], name)
    assert result["scenario"] == name and result["quick"] and result["started_cluster"]
    assert result["nodes"] == 3
    exactness = result["exactness"]
    assert exactness["exact"] and exactness["fingerprints_agree"]
    assert exactness["uncertain_ops"] == 0 and result["error_count"] == 0 and result["errors"] == {}
    assert result["load"]["unchanged"] == 0
    expected = exactness["expected_total"]
    assert expected > 0
    assert set(exactness["nodes"]) == {"n1", "n2", "n3"}
    for node in exactness["nodes"].values():
        assert node["total"] == expected and node["mismatched_items"] == 0
    assert 0 <= exactness["exact_after_s"] < scenarios.CONVERGE_TIMEOUT[True]
    # Load figures: percentiles ordered, rates positive, every request answered.
    load = result["load"]
    assert load["ok"] == load["requests"] > 0
    latency = result["latency"]
    assert latency["count"] == load["ok"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["p99_9_ms"] <= latency["max_ms"]
    assert positive(result["throughput"]["requests_per_s"]) and positive(result["throughput"]["ops_per_s"])
    # Memory: every node's RSS read before and after.
    for node in result["memory"]["nodes"].values():
        assert positive(node["rss_before"]) and positive(node["rss_after"])
    if name in WRITES:
        # Every like acknowledged is held, and the gossip that carried it was counted.
        assert expected == load["changes_acked"] - 2 * (load["planned_ops"] or {}).get("unlikes", 0)
        assert positive(result["gossip"]["bytes_per_like"])
        assert result["gossip"]["bytes"]["bytes_sent_deltas"] > 0
        assert result["memory"]["likes_added"] == expected
        assert all(positive(n["bytes_per_held_like"]) for n in result["memory"]["nodes"].values())
    assert set(result["met"]) >= {"zero_errors", "exact_on_every_node"}
    assert result["met"]["zero_errors"] and result["met"]["exact_on_every_node"]


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["hot-post", "hot-post-max"])
def test_hot_post_counts_every_user_once_on_nodes_redis_and_mysql(
    quick_run: tuple[Path, int], name: str
) -> None:
    out = quick_run[0]
    result = result_of(out, name)
    users = result["config"]["users"]
    assert users == 2_000 and result["config"]["items"] == 1
    assert result["load"]["sent_including_warmup"] == users
    exactness = result["exactness"]
    assert exactness["expected_total"] == users and exactness["all_users_counted"]
    sinks = exactness["sinks"]
    assert (
        sinks["redis"]["exact"] and sinks["redis"]["count_total"] == sinks["redis"]["status_total"] == users
    )
    assert sinks["mysql"]["exact"] and sinks["mysql"]["item_state_total"] == users
    assert sinks["mysql"]["like_records_live"] == users
    assert 0 <= sinks["redis"]["after_s"] <= scenarios.SINK_TIMEOUT[True]
    assert result["met"]["sinks_exact_s"] and result["met"]["all_users_counted"]
    # The private database and keys are gone.
    stores = Stores(REDIS_URL, MYSQL_SERVER_URL)
    (found,) = stores.mysql(f"SHOW DATABASES LIKE '{sinks['mysql']['database']}'")
    assert found is None
    assert stores.delete_prefix(sinks["redis"]["prefix"]) == 0


@pytest.mark.cluster
def test_zipf_ends_in_the_planned_state_with_unlikes(quick_run: tuple[Path, int]) -> None:
    result = result_of(quick_run[0], "zipf")
    planned = result["load"]["planned_ops"]
    assert planned["unlikes"] > 0.1 * (planned["likes"] + planned["unlikes"])
    exactness = result["exactness"]
    assert exactness["planned_match"] and exactness["planned_total"] == exactness["expected_total"]
    assert exactness["expected_total"] == planned["likes"] - planned["unlikes"]
    sinks = exactness["sinks"]
    assert sinks["redis"]["exact"] and sinks["mysql"]["exact"]
    assert sinks["mysql"]["like_records_live"] == exactness["expected_total"]


@pytest.mark.cluster
def test_reads_and_batch_carry_their_request_sizes(quick_run: tuple[Path, int]) -> None:
    reads = result_of(quick_run[0], "reads")
    assert reads["populated_likes"] == reads["exactness"]["expected_total"]
    assert reads["load"]["ops_ok"] == 100 * reads["load"]["ok"]
    assert "wrong counts" not in reads["errors"] and reads["gossip"]["bytes_per_like"] is None
    batch = result_of(quick_run[0], "batch")
    assert batch["config"]["per_request"] == 1000 and batch["load"]["urls"] == batch["urls"][:1]
    assert batch["load"]["ops_ok"] == 1000 * batch["load"]["ok"]
    assert batch["exactness"]["expected_total"] == batch["load"]["changes_acked"]


@pytest.mark.cluster
def test_a_running_cluster_is_loaded_left_running_and_a_wrong_count_is_caught(tmp_path: Path) -> None:
    with LocalCluster(2, tmp_path) as running:
        spec = scenarios.scenario("peak", quick=True, rate=500.0, seconds=1.0)
        result = scenarios.run_scenario(spec, quick=True, urls=running.urls, out=tmp_path / "out")
        assert running.process is not None and running.process.poll() is None  # still running
        assert not result["started_cluster"] and result["nodes"] == 2 and not result["sinks_enabled"]
        assert result["exactness"]["exact"]
        # The check can fail: one like more than the answers acknowledged is never seen.
        item = 7
        wrong = run_async(lambda: until_exact(running.urls, "peak", [item], {item: 1}, {}, 0.3, 0.0))
        assert not wrong["exact"] and wrong["exact_after_s"] is None
        assert all(node["mismatched_items"] == 1 for node in wrong["nodes"].values())


def test_mismatches_allow_only_operations_of_unknown_fate() -> None:
    ids = [1, 2, 3]
    expected = {1: 5, 2: 0, 3: 2}
    assert mismatches([5, 0, 2], ids, expected, {}) == 0
    assert mismatches([5, 1, 2], ids, expected, {}) == 1
    assert mismatches([5, 1, 3], ids, expected, {2: 1, 3: 1}) == 0
    assert mismatches([5, 2, 2], ids, expected, {2: 1}) == 1


def test_zipf_plan_unlikes_only_earlier_likes_of_the_same_pair() -> None:
    spec = LoadSpec(
        urls=("http://127.0.0.1:1",),
        mode="open",
        seconds=1.0,
        rate=1.0,
        shape="zipf",
        items=500,
        unlike_share=0.2,
        item_base=1000,
        seed=3,
    )
    plan = ZipfPlan(spec, 0, 5_000, user0=10**9)
    assert plan.unlikes + plan.likes == 5_000 and 800 <= plan.unlikes <= 1_000
    for unlike, like in plan.after.items():
        assert like <= unlike - UNLIKE_LAG and like not in plan.after
        assert (plan.items[unlike], plan.users[unlike]) == (plan.items[like], plan.users[like])
    assert len(set(plan.after.values())) == plan.unlikes  # each like unliked at most once
    net: Counter[int] = Counter()
    for i, item in enumerate(plan.items):
        net[item] += -1 if i in plan.after else 1
    assert dict(plan.planned) == dict(net) and all(n >= 0 for n in net.values())
    popularity = Counter(item for i, item in enumerate(plan.items) if i not in plan.after)
    assert popularity[1000] > popularity[1000 + 99] > 0  # rank 0 is the hottest item
    assert all(1000 <= item < 1500 for item in plan.items)


def test_batch_and_counts_requests_are_well_formed() -> None:
    urls = ("http://127.0.0.1:1", "http://127.0.0.1:2")
    batch = Worker(
        LoadSpec(
            urls=urls,
            mode="closed",
            seconds=1.0,
            shape="batch",
            per_request=3,
            items=10,
            item_base=100,
            connections=2,
        ),
        0,
    )
    request = batch.request_of(4)
    body = orjson.loads(request.body)
    assert request.method == b"POST" and request.path == "/v1/batch" and len(body["ops"]) == 3
    assert [op["id"] for op in body["ops"]] == [102, 103, 104]
    assert len({op["user"] for op in body["ops"]}) == 3 and request.writes == ((102, 1), (103, 1), (104, 1))
    reads = Worker(
        LoadSpec(
            urls=urls,
            mode="closed",
            seconds=1.0,
            shape="counts",
            per_request=4,
            items=10,
            item_base=100,
            connections=2,
        ),
        1,
    )
    request = reads.request_of(0)
    asked = [ref["id"] - 100 for ref in orjson.loads(request.body)["items"]]
    assert len(asked) == 4 and request.writes == ()
    answer = orjson.dumps({"counts": [populated_count(k) for k in asked]})
    assert reads.judge(0, request, answer) == (None, 4, 0)
    wrong = orjson.dumps({"counts": [populated_count(k) + 1 for k in asked]})
    assert reads.judge(0, request, wrong)[0] == "wrong counts"
    with pytest.raises(ValueError, match="connection per URL"):
        LoadSpec(urls=urls, mode="closed", seconds=1.0, connections=1)


def test_compare_chart_is_a_png(tmp_path: Path) -> None:
    latency = {"p50_ms": 1.0, "p99_ms": 5.0, "p99_9_ms": 9.0, "max_ms": 12.0}
    results = {
        "quick": True,
        "commit": "abc+dirty: x",
        "systems": {
            name: {"closed": {"achieved_rate": rate, "latency": latency}}
            for name, rate in (("ours", 9000.0), ("noop", 12000.0))
        },
    }
    path = charts.compare_chart(results, tmp_path / "compare.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
