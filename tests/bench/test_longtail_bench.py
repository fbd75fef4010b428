"""The long-tail benchmark runs end to end in quick mode on a real node (20,000 items, about 20 s).

Figures are checked for presence and sanity (positive, finite, counts exact), never against the
goals: how fast or how big a shared CI machine's node is at 20,000 items says nothing of a million.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import longtail
from bench.__main__ import main

pytestmark = pytest.mark.cluster


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_longtail_reports_memory_ingest_restart_and_disk_with_exact_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["longtail", "--quick", "--out", str(tmp_path)]) == 0  # quick: goals never fail it
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "longtail.json").read_text())
    assert results["items"] == longtail.QUICK_ITEMS and results["quick"] is True
    assert results["exact"] and all(results["exact"].values()), results["exact"]
    assert results["met"]["exact"] is True
    assert set(results["met"]) == {"memory", "ingest", "restart", "exact"}

    load = results["load"]
    assert load["requests"] == longtail.QUICK_ITEMS // longtail.BATCH_OPS
    assert positive(load["likes_per_second"]) and positive(load["seconds"])
    assert 0 < load["batch_p50_ms"] <= load["batch_p99_ms"]

    memory = results["memory"]
    assert set(memory) == {"fresh", "loaded", "drained", "restart_healthy", "restart_drained"}
    for when in ("loaded", "drained", "restart_healthy", "restart_drained"):
        reading = memory[when]
        assert all(positive(reading[field]) for field in ("rss", "rss_anon", "hwm")), (when, reading)
        assert reading["rss"] <= reading["hwm"]
        assert math.isfinite(reading["rss_per_item"]) and math.isfinite(reading["anon_per_item"])
    assert memory["fresh"]["rss_per_item"] == 0
    # Loading 20,000 items grows the node (by far more than a page a thousand items).
    assert memory["loaded"]["rss"] > memory["fresh"]["rss"]
    assert memory["loaded"]["hwm_per_item"] >= memory["loaded"]["rss_per_item"]

    restart = results["restart"]
    assert restart["stop_status"] == 0  # a clean stop: its final snapshot written
    assert 0 < restart["healthz_seconds"] <= restart["seconds"] < longtail.RESTART_TIMEOUT
    assert results["drain_seconds"] is not None and restart["drain_seconds"] is not None

    disk = results["disk"]
    assert positive(disk["bytes_per_item"])
    assert disk["drained"]["allocated"] >= disk["loaded"]["allocated"] > 0
    assert any(name.startswith("wal/") for name in disk["loaded"]["files"])
    assert "checkpoint.sqlite" in disk["drained"]["files"]  # the shipped file's SQLite checkpoints

    assert "| figure | value | goal | met |" in table and "likes/s" in table
    assert table.count("\n| ") >= 9
