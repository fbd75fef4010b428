"""The nemeses: what breaks the cluster while the clients write (see the package), each returning the
figures it measured."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.disk import Filler, Tmpfs, build_fail_fsync, fail_fsync_env
from bench.faults.cluster import Cluster, http_status, until
from bench.faults.settings import Settings
from bench.faults.sinks import Sinks
from bench.faults.watcher import Watcher
from bench.faults.workload import Workload
from bench.launch import HOST
from bench.tcpproxy import FrameProxy

NEMESES = ("partition", "kill", "pause", "proxy", "sinks", "disk")


@dataclass
class Context:
    """What a nemesis works with."""

    cluster: Cluster
    session: aiohttp.ClientSession
    watcher: Watcher
    settings: Settings
    rng: random.Random
    sinks: Sinks | None = None
    workload: Workload | None = None
    disk: DiskFault | None = None


def grudge(kind: str, names: Sequence[str], rng: random.Random) -> list[tuple[str, str]]:
    """The pairs of nodes a partition of ``kind`` cuts apart."""
    order = list(names)
    rng.shuffle(order)
    if kind == "isolate":
        return [(order[0], other) for other in order[1:]]
    if kind == "bridge":  # order[0] talks to both halves, which cannot talk to each other
        rest = order[1:]
        left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    else:  # halves
        left, right = order[: len(order) // 2], order[len(order) // 2 :]
    return [(a, b) for a in left for b in right]


async def partition_nemesis(ctx: Context) -> dict[str, Any]:
    """A new random partition every ``partition_every`` seconds; healed at the end."""
    s, cluster = ctx.settings, ctx.cluster
    kinds: Counter[str] = Counter()
    end = time.monotonic() + s.seconds
    try:
        while (left := end - time.monotonic()) > 0:
            kind = ctx.rng.choice(["halves", "isolate", "bridge"])
            kinds[kind] += 1
            cluster.set_plan(blocked=grudge(kind, cluster.names, ctx.rng))
            await asyncio.sleep(min(s.partition_every, left))
    finally:
        cluster.set_plan()
    return {"partitions": dict(kinds)}


async def kill_nemesis(ctx: Context) -> dict[str, Any]:
    """``kill -9`` a random node every ``kill_every`` seconds; restart it once every other node has
    declared it dead (bounded), which also times the failure detector on a real death."""
    s, cluster = ctx.settings, ctx.cluster
    detections: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    while time.monotonic() < end:
        started = time.monotonic()
        victim = ctx.rng.choice(cluster.names)
        cluster.kill(victim)
        killed_at = time.monotonic()
        others = [n for n in cluster.names if n != victim]

        async def all_see_dead(
            victim: str = victim, at: float = killed_at, others: list[str] = others
        ) -> bool:
            return set(ctx.watcher.dead_verdicts(victim, at, time.monotonic())) >= set(others)

        with contextlib.suppress(TimeoutError):
            await until(all_see_dead, 10.0, f"every node declares {victim} dead", every=0.1)
        verdicts = ctx.watcher.dead_verdicts(victim, killed_at, time.monotonic())
        detections.append(
            {
                "victim": victim,
                "first_dead_s": round(min(verdicts.values()), 2) if verdicts else None,
                "all_dead_s": round(max(verdicts.values()), 2) if len(verdicts) == len(others) else None,
            }
        )
        await asyncio.to_thread(cluster.start, victim)
        wait = s.kill_every - (time.monotonic() - started)
        if time.monotonic() + wait >= end:
            break  # the heal is this restart: convergence is timed from it
        await asyncio.sleep(max(0.0, wait))
    all_dead = [d["all_dead_s"] for d in detections if d["all_dead_s"] is not None]
    return {
        "kills": detections,
        "kill_detection_all_s_max": max(all_dead) if all_dead else None,
        "kills_undetected_in_10s": sum(1 for d in detections if d["all_dead_s"] is None),
    }


async def pause_nemesis(ctx: Context) -> dict[str, Any]:
    """SIGSTOP a random node for ``pause_seconds``, SIGCONT, a gap, again; count the dead verdicts
    the others pass on it (each one false: the node was only paused)."""
    s, cluster = ctx.settings, ctx.cluster
    pauses: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    try:
        while time.monotonic() < end:
            victim = ctx.rng.choice(cluster.names)
            paused_at = time.monotonic()
            cluster.pause(victim)
            try:
                await asyncio.sleep(s.pause_seconds)
            finally:
                cluster.resume(victim)
            resumed_at = time.monotonic()
            last = resumed_at + s.pause_gap + s.pause_seconds > end
            if not last:
                await asyncio.sleep(s.pause_gap)
            verdicts = ctx.watcher.dead_verdicts(victim, paused_at, time.monotonic())
            pauses.append(
                {
                    "victim": victim,
                    "false_dead_verdicts": len(verdicts),
                    "first_dead_s": round(min(verdicts.values()), 2) if verdicts else None,
                    "resumed_after_s": round(resumed_at - paused_at, 2),
                }
            )
            if last:
                break  # the heal is this SIGCONT: convergence is timed from it
    finally:
        for name in list(cluster.paused):
            cluster.resume(name)
    return {
        "pauses": pauses,
        "false_dead_verdicts": sum(p["false_dead_verdicts"] for p in pauses),
    }


async def proxy_nemesis(ctx: Context) -> dict[str, Any]:
    """Every node's incoming gossip through a frame-mangling proxy; direct again at the end."""
    s, cluster = ctx.settings, ctx.cluster
    proxies = {
        name: FrameProxy(
            HOST, cluster.file.gossip_ports[name], mangling=s.mangling, rng=random.Random(ctx.rng.random())
        )
        for name in cluster.names
    }
    try:
        for proxy in proxies.values():
            await proxy.start()
        cluster.set_plan(via={name: proxy.port for name, proxy in proxies.items()})
        await asyncio.sleep(s.seconds)
    finally:
        cluster.set_plan()
        totals: Counter[str] = Counter()
        for proxy in proxies.values():
            totals.update(proxy.counters)
            await proxy.stop()
    return {"mangling": asdict(s.mangling), "frames": dict(totals)}


class DiskFault:
    """The disk nemesis's tools for one node: its data dir on a small tmpfs, a filler for it and, with
    fsync failures, the shim (in ``env``, for that node only) and its trigger file. Set up before the
    cluster starts; unmounted after it stops. ``DiskFaultUnavailable`` says why it cannot be set up."""

    def __init__(self, root: Path, victim: str, settings: Settings) -> None:
        self.victim = victim
        self.tmpfs = Tmpfs(root / "data" / victim, settings.disk_bytes)
        self.filler = Filler(self.tmpfs.path)
        self.trigger = root / "fail-fsync"
        self.env: dict[str, str] = {}
        self._shim = root / "shim" if settings.disk_fsync_failures else None

    def __enter__(self) -> DiskFault:
        if self._shim is not None:
            self.env = fail_fsync_env(build_fail_fsync(self._shim), self.trigger)
        self.tmpfs.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.trigger.unlink(missing_ok=True)
        self.tmpfs.unmount()


async def disk_nemesis(ctx: Context) -> dict[str, Any]:
    """One node's disk filled (or, every other cycle with ``disk_fsync_failures``, its fsyncs failing)
    for ``disk_fault_seconds``, then freed; up to ``disk_cycles`` times within ``seconds``. After each,
    the time until the node takes writes again: its first acknowledged write sent after the space was
    freed, and ``/readyz`` 200. A node that does not come back ends the cycles (more would measure
    nothing). Then ``kill -9`` and a restart (the heal), so what its log replays is checked too."""
    s, cluster, disk, workload = ctx.settings, ctx.cluster, ctx.disk, ctx.workload
    assert disk is not None and workload is not None
    victim = disk.victim
    cycles: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    await asyncio.sleep(min(s.disk_gap, s.seconds))
    for cycle in range(s.disk_cycles):
        kind = "fsync" if s.disk_fsync_failures and cycle % 2 == 1 else "full"
        began = time.monotonic()
        try:
            if kind == "full":
                await asyncio.to_thread(disk.filler.fill)
            else:
                disk.trigger.touch()
            await asyncio.sleep(s.disk_fault_seconds)
            ready_while = await http_status(ctx.session, cluster.urls[victim] + "/readyz")
        finally:  # cancelled or not, the fault ends here (an unlink: instant)
            disk.filler.free()
            disk.trigger.unlink(missing_ok=True)
        freed = time.monotonic()
        writes_again, ready_again = await back_to_writes(ctx, victim, freed, s.disk_recover_timeout)
        refused = sum(
            1
            for pair in workload.pairs
            for op in pair.ops
            if op.node == victim and op.outcome == "refused" and op.start >= began
        )
        cycles.append(
            {
                "kind": kind,
                "fault_s": round(freed - began, 2),
                "refused": refused,
                "readyz_while_faulty": ready_while,
                "writes_again_s": None if writes_again is None else round(writes_again, 2),
                "ready_again_s": None if ready_again is None else round(ready_again, 2),
            }
        )
        if writes_again is None or time.monotonic() + s.disk_gap + s.disk_fault_seconds > end:
            break
        await asyncio.sleep(s.disk_gap)
    cluster.kill(victim)
    await asyncio.to_thread(cluster.start, victim)
    again = [c["writes_again_s"] for c in cycles]
    return {
        "disk_victim": victim,
        "disk_cycles": cycles,
        "writes_again_s_max": max(again) if again and None not in again else None,
    }


async def back_to_writes(
    ctx: Context, victim: str, freed: float, timeout: float
) -> tuple[float | None, float | None]:
    """Seconds from ``freed`` until ``victim`` acknowledged a write sent after it that changed something
    (the workload's history), and until its ``/readyz`` answered 200; None for either not seen within
    ``timeout``."""
    assert ctx.workload is not None
    writes: float | None = None
    ready: float | None = None
    for _ in range(int(timeout / 0.05) + 1):
        if writes is None:
            ends = []
            for pair in ctx.workload.pairs:
                for op in reversed(pair.ops):  # one client's, in order: only the newest are after ``freed``
                    if op.start < freed:
                        break
                    if op.node == victim and op.outcome == "ok" and op.changed:
                        ends.append(op.end)
            writes = min(ends) - freed if ends else None
        if ready is None and await http_status(ctx.session, ctx.cluster.urls[victim] + "/readyz") == 200:
            ready = time.monotonic() - freed
        if (writes is not None and ready is not None) or time.monotonic() - freed > timeout:
            break
        await asyncio.sleep(0.05)
    return writes, ready


async def sinks_nemesis(ctx: Context) -> dict[str, Any]:
    """Load, then Redis and MySQL cut (blackholed) for ``seconds``, then restored."""
    assert ctx.sinks is not None
    await asyncio.sleep(ctx.settings.sink_lead)
    outage_started = time.monotonic()
    for proxy in ctx.sinks.proxies:
        proxy.cut("blackhole")
    try:
        await asyncio.sleep(ctx.settings.seconds)
    finally:
        for proxy in ctx.sinks.proxies:
            proxy.restore()
    return {"outage_s": round(time.monotonic() - outage_started, 2)}


NEMESIS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "partition": partition_nemesis,
    "kill": kill_nemesis,
    "pause": pause_nemesis,
    "proxy": proxy_nemesis,
    "sinks": sinks_nemesis,
    "disk": disk_nemesis,
}
