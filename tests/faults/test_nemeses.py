"""The bounded fault suite: each nemesis for a few seconds against a real 3-node cluster under load,
then heal and check (``bench.faults`` holds the workload, nemeses and checker; ``python -m bench
faults`` runs the same code at the issue's full figures).

Asserted for every nemesis: lost == 0, phantom == 0, every node's count equals the size of its liker
list, every node equal after the heal, and (for the sink outage) Redis and MySQL equal to the nodes.
For the disk (one node's data dir on a tmpfs filled and freed, then its fsyncs failing through the
shim): writes were refused, none of them shows, and the node took writes again after each fault by
itself, ``/readyz`` 503 during it and 200 after. It needs root (mount) and gcc (the shim): without
them it skips locally and fails under ``CI=true``.

Convergence: the issue's goal is every node equal within ``CONVERGE_GOAL`` (2 s) of the heal, and
``python -m bench faults`` reports it at full size. Here, on a 2-core machine that also runs the rest of
the suite, a run is held to ``CONVERGE_BOUND`` instead, and every run over the 2 s goal raises a warning
naming the time, so a miss shows in the test summary rather than hiding in the bound (seen: partitions
0.8-3.3 s, kill 0.5-2.4 s, proxy 1.5-2.7 s while the suite ran; 2 s is met on a quiet machine in most runs).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path

import pytest

from bench.disk import DiskFaultUnavailable
from bench.faults import CONVERGE_GOAL, Settings, SinkServersUnavailable, render, run_scenario
from tests.node.checkpoint.conftest import server_unreachable

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

#: What convergence is held to here (see the module docstring).
CONVERGE_BOUND = 10.0
SETTINGS = {
    "partition": Settings(nodes=3, seconds=6.0, clients=6, seed=11),
    "kill": Settings(nodes=3, seconds=6.0, clients=6, seed=12),
    "pause": Settings(nodes=3, seconds=5.0, clients=16, op_timeout=1.0, seed=13),
    "proxy": Settings(nodes=3, seconds=6.0, clients=6, seed=14),
    "sinks": Settings(nodes=3, seconds=4.0, clients=6, sink_lead=2.0, sink_timeout=60.0, seed=15),
    "disk": Settings(
        nodes=3,
        seconds=6.0,
        clients=6,
        seed=16,
        disk_cycles=2,
        disk_fault_seconds=1.0,
        disk_gap=0.5,
        disk_fsync_failures=True,
        disk_recover_timeout=10.0,
    ),
}


@pytest.mark.parametrize("nemesis", list(SETTINGS))
def test_no_loss_and_no_duplication_under(nemesis: str, tmp_path: Path) -> None:
    try:
        result = asyncio.run(run_scenario(nemesis, SETTINGS[nemesis], tmp_path / nemesis))
    except (SinkServersUnavailable, DiskFaultUnavailable) as exc:
        server_unreachable(str(exc))
    (tmp_path / "result.json").write_text(json.dumps(result, indent=2))
    print(render([result]))
    where = json.dumps(result["examples"])[:2000]
    assert result["acknowledged"] > 100, "too little was acknowledged: the run tested nothing"
    assert result["lost"] == 0, where
    assert result["phantom"] == 0, where
    assert result["count_mismatches"] == 0 and result["duplicate_likers"] == 0, where
    assert result["converge_s"] is not None and result["unequal_items"] == 0, "the nodes never agreed"
    converge = result["converge_s"]
    if converge > CONVERGE_GOAL:
        warnings.warn(
            f"{nemesis}: every node equal {converge} s after the heal, over the {CONVERGE_GOAL} s goal",
            stacklevel=1,
        )
    assert converge <= CONVERGE_BOUND, converge
    if nemesis == "partition":
        assert result["gossip"]["frames_cut"] > 0, "no partition took effect"
    if nemesis == "kill":
        assert result["kills"] and result["kills"][0]["all_dead_s"] is not None, "the kill went unnoticed"
    if nemesis == "pause":
        assert result["pauses"] and result["indeterminate"] > 0, "nobody noticed the pause"
    if nemesis == "proxy":
        frames = result["frames"]
        assert frames["dropped"] and frames["duplicated"] and frames["reordered"] and frames["replayed"]
    if nemesis == "sinks":
        assert result["sinks_equal_s"] is not None, result["sinks_wrong_items"]
        assert result["mysql_duplicate_records"] == 0
    if nemesis == "disk":
        cycles = result["disk_cycles"]
        assert [c["kind"] for c in cycles] == ["full", "fsync"], f"a cycle did not run: {cycles}"
        assert all(c["refused"] > 0 for c in cycles), f"a fault refused no write: it took no effect: {cycles}"
        assert result["refused_visible"] == 0, where
        assert all(c["writes_again_s"] is not None for c in cycles), f"no writes taken again: {cycles}"
        assert all(c["readyz_while_faulty"] == 503 and c["ready_again_s"] is not None for c in cycles), cycles
