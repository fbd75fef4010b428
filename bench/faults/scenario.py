"""One fault scenario end to end (a cluster, the workload under one nemesis, the heal, the checks), and
the command that runs each nemesis in turn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.disk import DiskFaultUnavailable
from bench.faults.checker import check, convergence, read_states
from bench.faults.cluster import Cluster, until
from bench.faults.nemeses import NEMESES, NEMESIS, Context, DiskFault
from bench.faults.report import render
from bench.faults.settings import CONVERGE_GOAL, DISK_VICTIM, Settings
from bench.faults.sinks import Sinks
from bench.faults.watcher import Watcher
from bench.faults.workload import Workload


async def run_scenario(nemesis: str, settings: Settings, root: Path) -> dict[str, Any]:
    """Start a cluster, run the workload under ``nemesis``, heal, time convergence, check; the figures."""
    if nemesis not in NEMESIS:
        raise ValueError(f"unknown nemesis {nemesis!r}; one of {', '.join(NEMESES)}")
    root.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        sinks = await stack.enter_async_context(Sinks()) if nemesis == "sinks" else None
        # Mounted before the cluster starts, unmounted after it stops (the stack unwinds in reverse).
        disk = stack.enter_context(DiskFault(root, DISK_VICTIM, settings)) if nemesis == "disk" else None
        cluster = Cluster(
            root,
            settings.nodes,
            checkpoint=sinks.checkpoint_settings() if sinks else None,
            gossip=dict(settings.gossip),
        )
        if disk is not None:
            cluster.node_env[disk.victim] = disk.env
        stack.callback(cluster.stop_all)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await asyncio.to_thread(cluster.start_all)
        watcher = Watcher(cluster, session)
        watcher.start()
        stack.push_async_callback(watcher.stop)
        workload = Workload(cluster, settings)
        rng = random.Random(settings.seed)
        ctx = Context(cluster, session, watcher, settings, rng, sinks, workload, disk)
        workload.start()
        started = time.monotonic()
        try:
            figures = await NEMESIS[nemesis](ctx)
        finally:
            healed_at = time.monotonic()
            await workload.stop()
        load_s = healed_at - started
        converge_s, alive_s = await convergence(session, cluster, healed_at, settings.converge_timeout)
        states = await read_states(session, cluster, settings.items)
        verdict = check(workload.pairs, states)
        result: dict[str, Any] = {
            "nemesis": nemesis,
            "nodes": settings.nodes,
            "fault_s": round(load_s, 1),
            "operations": verdict.operations,
            "acknowledged": verdict.acknowledged,
            "failed": verdict.failed,
            "indeterminate": verdict.indeterminate,
            "refused": verdict.refused,
            "refused_visible": verdict.refused_visible,
            "pairs": verdict.pairs,
            "lost": verdict.lost,
            "phantom": verdict.phantom,
            "count_mismatches": verdict.count_mismatches,
            "duplicate_likers": verdict.duplicate_likers,
            "unequal_items": verdict.unequal_items,
            "converge_s": None if converge_s is None else round(converge_s, 2),
            "all_alive_s": None if alive_s is None else round(alive_s, 2),
            "likers_held": sum(len(i.likers) for i in states[cluster.names[0]].values()),
            "examples": verdict.examples,
            **figures,
            "gossip": watcher.gossip_totals(),
        }
        if sinks is not None:
            expected = {item: set(held.likers) for item, held in states[cluster.names[0]].items()}

            async def sinks_equal() -> bool:
                return await sinks.equal(expected) == (0, 0)

            result["sinks_equal_s"] = None
            with contextlib.suppress(TimeoutError):
                await until(sinks_equal, settings.sink_timeout, "Redis and MySQL equal the nodes", every=0.5)
                result["sinks_equal_s"] = round(time.monotonic() - healed_at, 2)
            result["sinks_wrong_items"] = dict(
                zip(("redis", "mysql"), await sinks.equal(expected), strict=True)
            )
            result["mysql_duplicate_records"] = await sinks.duplicate_records()
        result["met"] = met(result)
        return result


def met(result: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals for one scenario."""
    goals = {
        "lost == 0": result["lost"] == 0,
        "phantom == 0": result["phantom"] == 0,
        "counts == set sizes": result["count_mismatches"] == 0 and result["duplicate_likers"] == 0,
        "nodes equal": result["unequal_items"] == 0 and result["converge_s"] is not None,
        f"equal within {CONVERGE_GOAL:.0f} s of heal": (
            result["converge_s"] is not None and result["converge_s"] <= CONVERGE_GOAL
        ),
    }
    if "sinks_equal_s" in result:
        goals["Redis/MySQL equal the nodes"] = (
            result["sinks_equal_s"] is not None and result["mysql_duplicate_records"] == 0
        )
    if "disk_cycles" in result:
        cycles = result["disk_cycles"]
        goals["refused writes absent"] = result["refused_visible"] == 0
        goals["writes taken again after every fault, without a restart"] = bool(cycles) and all(
            c["writes_again_s"] is not None for c in cycles
        )
        goals["/readyz 503 during each fault and 200 after"] = bool(cycles) and all(
            c["readyz_while_faulty"] == 503 and c["ready_again_s"] is not None for c in cycles
        )
    return goals


# -- the command ---------------------------------------------------------------------------------------

#: The issue's long-run durations (seconds of faults) per nemesis.
LONG_SECONDS = {"partition": 60.0, "kill": 60.0, "pause": 32.0, "proxy": 60.0, "sinks": 30.0, "disk": 40.0}


def run(
    nemeses: list[str],
    *,
    seconds: float | None,
    nodes: int,
    out: Path,
    quick: bool = False,
    fsync_failures: bool = False,
) -> list[dict[str, Any]]:
    """Each nemesis in turn on a fresh cluster; writes ``faults.json`` under ``out``. A nemesis that
    cannot run here (``disk`` without root) is a row saying why, and a goal missed."""
    results = []
    with tempfile.TemporaryDirectory(prefix="likes-faults-") as temp:
        for nemesis in nemeses:
            length = seconds if seconds is not None else (6.0 if quick else LONG_SECONDS[nemesis])
            # A paused node holds each client that picks it for a whole timeout: more, shorter ones.
            pause = nemesis == "pause"
            settings = Settings(
                nodes=nodes,
                seconds=length,
                clients=(16 if pause else 6) if quick else (20 if pause else 10),
                op_timeout=1.0 if pause else 2.0,
                disk_cycles=2 if quick else 8,
                disk_fsync_failures=fsync_failures,
            )
            print(f"# {nemesis}: {nodes} nodes, {length:.0f} s of faults", flush=True)
            try:
                results.append(asyncio.run(run_scenario(nemesis, settings, Path(temp) / nemesis)))
            except DiskFaultUnavailable as exc:
                print(f"# {nemesis}: cannot run here: {exc}", flush=True)
                results.append({"nemesis": nemesis, "not_run": str(exc), "met": {"ran": False}})
            print(render(results[-1:]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
