"""The like-throughput comparison runs end to end in quick mode: our node and the three peers, real
processes on loopback, real Redis and MySQL.

Figures are checked for presence and sanity (positive rates, ordered percentiles, no errors, stored
= acknowledged, nothing left behind in Redis or MySQL), never for speed: a shared CI machine says
nothing about the code. Redis or MySQL unreachable: skipped locally, failed on CI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench import compare
from bench.__main__ import main
from bench.load import LoadSpec
from bench.peers import noop
from bench.servers import Stores
from tests.node.checkpoint.conftest import MYSQL_SERVER_URL, REDIS_URL, server_unreachable

SYSTEMS = {"ours", "noop", "redis_queue", "mysql_upsert"}


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def sane_load(result: dict[str, Any], mode: str) -> None:
    assert result["mode"] == mode
    assert result["ok"] > 0 and result["ok"] == result["requests"]
    assert result["error_count"] == 0 and result["errors"] == {}
    assert result["unchanged"] == 0  # distinct users: every like was new work
    assert result["changes_acked"] >= result["ok"]  # warm-up likes count too
    assert positive(result["achieved_rate"]) and positive(result["elapsed_s"])
    latency = result["latency"]
    assert latency["count"] == result["ok"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["p99_9_ms"] <= latency["max_ms"]
    assert isinstance(result["bound_by"], str) and result["bound_by"]
    assert result["cpu"] is not None and positive(result["cpu"]["cores"]["server"])
    assert not result["hit_request_bound"]


@pytest.mark.cluster
def test_quick_compare_measures_ours_and_every_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = Stores(REDIS_URL, MYSQL_SERVER_URL)
    problems = stores.reachable()
    if problems:
        server_unreachable("; ".join(problems.values()))
    argv = ["compare", "--quick", "--out", str(tmp_path), "--redis-url", REDIS_URL]
    assert main([*argv, "--mysql-url", MYSQL_SERVER_URL]) == 0  # quick mode exits 0 whatever the figures
    results = json.loads((tmp_path / "compare.json").read_text())
    systems = results["systems"]
    assert set(systems) == SYSTEMS
    for system in systems.values():
        sane_load(system["closed"], "closed")
        assert system["closed"]["connections"] == 64 and system["closed"]["seconds"] == 2.0
        assert system["exit_status"] == 0  # every server stopped cleanly (the usual design flushed)
    opened = systems["ours"]["open"]
    sane_load(opened, "open")
    assert opened["offered_rate"] == compare.OPEN_RATE and opened["max_late_ms"] is not None
    # Every like acknowledged is stored: in our node, in the usual design's MySQL, in the per-like MySQL.
    assert results["exact"] == {"ours": True, "redis_queue": True, "mysql_upsert": True}
    assert systems["ours"]["stored"] == systems["ours"]["closed"]["changes_acked"] + opened["changes_acked"]
    assert systems["ours"]["wal"]["fsync"] == "always" and positive(systems["ours"]["likes_per_fsync"])
    usual = systems["redis_queue"]
    assert usual["drained"] and usual["peer_stats"]["rows_written"] == usual["mysql_rows"]
    rates = results["throughput"]
    assert all(positive(rates[name]) for name in SYSTEMS)
    assert results["ratios"]["vs_noop"] == pytest.approx(rates["ours"] / rates["noop"])
    assert results["ratios"]["vs_usual"] == pytest.approx(rates["ours"] / rates["redis_queue"])
    assert set(results["met"]) == {"vs_noop", "vs_usual", "open_p99_ms"}
    pinning = results["pinning"]
    if pinning["applied"]:
        assert systems["ours"]["closed"]["pinned_cpus"] == list(compare.LOAD_CPUS)
        assert set(systems["noop"]["closed"]["cpu"]["cpu_busy_share"]) >= {"cpu0", "cpu1"}
    # Nothing is left behind: the peers' databases are dropped and their Redis keys deleted.
    for name in ("redis_queue", "mysql_upsert"):
        (found,) = stores.mysql(f"SHOW DATABASES LIKE '{systems[name]['mysql_database']}'")
        assert found is None
    assert stores.delete_prefix(usual["redis_prefix"]) == 0
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # throughput and latency chart
    table = (tmp_path / "compare.md").read_text()
    assert "ours / no-op like throughput" in table and "Pinning:" in table
    assert "ours / usual design" in capsys.readouterr().out


async def test_the_noop_peer_validates_the_path_as_our_node_does() -> None:
    async with TestClient(TestServer(noop.create_app())) as client:
        ok = await client.put("/v1/items/post/1/likes/18446744073709551615")
        assert ok.status == 200 and await ok.json() == {"liked": True, "changed": True, "count": 1}
        for path in (
            "/v1/items/Post/1/likes/2",
            "/v1/items/post/18446744073709551616/likes/2",
            "/v1/items/post/1/likes/-2",
            "/v1/items/a23456789012345678901/1/likes/2",
        ):
            bad = await client.put(path)
            assert bad.status == 422, path
            assert (await bad.json())["error"]["code"] == "invalid"


def test_load_specs_are_checked() -> None:
    urls = ("http://127.0.0.1:1",)
    with pytest.raises(ValueError, match="rate"):
        LoadSpec(urls=urls, mode="open", seconds=1.0)
    with pytest.raises(ValueError, match="URL"):
        LoadSpec(urls=(), mode="closed", seconds=1.0)
    with pytest.raises(ValueError, match="connection"):
        LoadSpec(urls=urls, mode="closed", seconds=1.0, workers=2, connections=1)
    assert LoadSpec(urls=urls, mode="closed", seconds=1.0).client == "raw"
