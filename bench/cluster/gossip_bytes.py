"""c. Gossip bytes per like per peer while a 3-node cluster takes a fixed-schedule load (see the
package)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import queue
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster.report import GOALS
from bench.common import (
    DEFAULT_OUT,
    CpuSample,
    eventually,
    host_info,
    run_async,
    session,
    summary_ms,
    write_json,
)
from bench.launch import LocalCluster
from gossip import MemberState

#: Longest wait for the nodes' fingerprints to agree after a load, in seconds.
CONVERGE_TIMEOUT = 60.0
#: Batches the load generator may have unanswered at once; past it, it falls behind (and says so).
MAX_IN_FLIGHT = 64
#: Multiplying by an odd constant modulo 2**63 maps distinct sequence numbers to distinct user ids
#: spread over 63 bits, as snowflake-style ids are: small ids would flatter the encoded sizes.
USER_SCRAMBLE = 0x9E3779B97F4A7C15


#: The gossip counters read before and after the load.
GOSSIP_COUNTERS = ("bytes_sent", "bytes_sent_deltas", "bytes_sent_anti_entropy", "bytes_sent_membership")
LOAD_TYPE = "gb"
#: Counters that say the cluster was not healthy during the load (summed over the nodes).
HEALTH_COUNTERS = (
    "deltas_unsent",
    "frames_dropped",
    "probe_failures",
    "members_suspected",
    "members_declared_dead",
    "anti_entropy_keys_repaired",
)
#: Gossip stats that are levels, not counters: reported as they ended, not as differences.
GAUGES = frozenset({*(f"members_{state.value}" for state in MemberState), "anti_entropy_keys_indexed"})


def user_id(sequence: int) -> int:
    """The ``sequence``-th distinct user id (sequence >= 1), a 63-bit number."""
    return sequence * USER_SCRAMBLE % 2**63


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """What the load generator offers: ``rate`` distinct likes/s for ``seconds`` over ``items`` items."""

    urls: tuple[str, ...]
    rate: int
    seconds: float
    items: int
    batches_per_s: int
    seed: int

    @property
    def ops_per_batch(self) -> int:
        return max(1, round(self.rate / self.batches_per_s))

    @property
    def batches(self) -> int:
        return max(1, round(self.seconds * self.batches_per_s))


async def _offer_load(plan: LoadPlan, ready: Any, go: Any) -> dict[str, Any]:
    """Send batch k at start + k / batches_per_s to node k mod n, without waiting for earlier ones."""
    rng = random.Random(plan.seed)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    latencies: list[float] = []
    counts = {"ops_acked": 0, "likes_applied": 0, "batches_failed": 0}
    last_answer = 0.0

    async def send(client: aiohttp.ClientSession, url: str, ops: list[dict[str, Any]]) -> None:
        nonlocal last_answer
        try:
            sent = time.perf_counter()
            async with client.post(f"{url}/v1/batch", json={"ops": ops}) as response:
                body = await response.json()
            last_answer = time.perf_counter()
            latencies.append(last_answer - sent)
            if response.status != 200:
                counts["batches_failed"] += 1
                return
            counts["ops_acked"] += len(body["results"])
            counts["likes_applied"] += sum(1 for result in body["results"] if result["changed"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            counts["batches_failed"] += 1
        finally:
            in_flight.release()

    async with session() as client:
        for url in plan.urls:
            async with client.get(f"{url}/healthz") as response:
                await response.read()
        ready.set()
        if not await asyncio.to_thread(go.wait, 60.0):
            raise RuntimeError("the measurement never said go")
        tasks: list[asyncio.Task[None]] = []
        period, per_batch = 1 / plan.batches_per_s, plan.ops_per_batch
        max_late = 0.0
        start = time.perf_counter()
        for k in range(plan.batches):
            due = start + k * period
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await in_flight.acquire()
            max_late = max(max_late, time.perf_counter() - due)
            first = k * per_batch + 1  # users are distinct across the whole run: every op is a new like
            ops = [
                {"op": "like", "type": LOAD_TYPE, "id": rng.randrange(plan.items), "user": user_id(first + j)}
                for j in range(per_batch)
            ]
            tasks.append(asyncio.create_task(send(client, plan.urls[k % len(plan.urls)], ops)))
        last_sent = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60.0)
    offered = plan.batches * per_batch
    return {
        "ops_offered": offered,
        **counts,
        "send_s": last_sent - start,
        "elapsed_s": last_answer - start,
        "offered_rate": offered / max(last_sent - start, 1e-9),
        "achieved_rate": counts["ops_acked"] / max(last_answer - start, 1e-9),
        "max_late_ms": max_late * 1000,
        "batch_latency": summary_ms(latencies),
    }


def _load_worker(plan: LoadPlan, ready: Any, go: Any, answers: Any) -> None:
    """The load generator process: its own interpreter and event loop, so it competes with no timer."""
    try:
        answers.put(("ok", run_async(lambda: _offer_load(plan, ready, go))))
    except BaseException as exc:
        answers.put(("error", repr(exc)))
        raise


async def _gossip_counters(client: aiohttp.ClientSession, urls: Sequence[str]) -> list[dict[str, Any]]:
    views = []
    for url in urls:
        async with client.get(f"{url}/v1/cluster") as response:
            views.append(await response.json())
    return views


async def _converge_and_count(urls: Sequence[str], items: int, max_count_items: int) -> dict[str, Any]:
    """Wait for equal fingerprints, then every node's count total over the load's items."""
    async with session() as client:

        async def agreed() -> bool:
            return len({view["fingerprint"] for view in await _gossip_counters(client, urls)}) == 1

        converged, waited = await eventually(agreed, timeout=CONVERGE_TIMEOUT, interval=0.1)
        totals = []
        for url in urls:
            total = 0
            for first in range(0, items, max_count_items):
                ids = range(first, min(items, first + max_count_items))
                refs = [{"type": LOAD_TYPE, "id": i} for i in ids]
                async with client.post(f"{url}/v1/counts", json={"items": refs}) as response:
                    total += sum((await response.json())["counts"])
            totals.append(total)
        views = await _gossip_counters(client, urls)
    return {"converged": converged, "converge_s": waited, "count_totals": totals, "views": views}


def _stats_of(views: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {name: sum(int(view["gossip"][name]) for view in views) for name in GOSSIP_COUNTERS}


def gossip_bytes(
    *,
    rate: int = 5000,
    seconds: float = 20.0,
    quick: bool = False,
    items: int = 10_000,
    batches_per_s: int = 100,
    nodes: int = 3,
    out: Path | None = DEFAULT_OUT,
    root: Path | None = None,
    seed: int = 7,
    overrides: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Gossip bytes per like per peer while ``rate`` likes/s arrive; writes ``gossip_bytes.json``."""
    if quick:
        seconds = min(seconds, 3.0)
    host = host_info()
    context = multiprocessing.get_context("spawn")  # no copy of our state (or loop) in the child
    with LocalCluster(nodes, root, gossip=overrides) as cluster:
        plan = LoadPlan(tuple(cluster.urls), rate, seconds, items, batches_per_s, seed)
        ready, go, answers = context.Event(), context.Event(), context.Queue()
        worker = context.Process(target=_load_worker, args=(plan, ready, go, answers), daemon=True)
        worker.start()
        try:
            if not ready.wait(30.0):
                raise RuntimeError("the load generator did not get ready within 30 s")
            before_views = run_async(lambda: _read_views(cluster.urls))
            pids = {view["node"]["name"]: int(view["node"]["pid"]) for view in before_views}
            pids["load_generator"] = worker.pid or 0
            cpu_start = CpuSample.take(pids)
            window = time.perf_counter()
            go.set()
            try:
                status, load = answers.get(timeout=seconds + 120.0)
            except queue.Empty as exc:
                raise RuntimeError("the load generator did not report within its time bound") from exc
            cpu = cpu_start.usage_since()
            if status != "ok":
                raise RuntimeError(f"the load generator failed: {load}")
            checked = run_async(lambda: _converge_and_count(cluster.urls, items, cluster.api.max_count_items))
            window_s = time.perf_counter() - window
        finally:
            worker.join(timeout=10.0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
        gossip = cluster.gossip
    before, after = _stats_of(before_views), _stats_of(checked["views"])
    spent = {name: after[name] - before[name] for name in GOSSIP_COUNTERS}
    likes = load["likes_applied"]
    peers = nodes - 1
    per_like = {name: spent[name] / likes / peers if likes else math.nan for name in GOSSIP_COUNTERS}
    exact = all(total == likes for total in checked["count_totals"])
    per_node = _per_node_changes(before_views, checked["views"])
    health = {name: sum(node.get(name, 0) for node in per_node.values()) for name in HEALTH_COUNTERS}
    # A delta never sent (no live peer) or dropped costs no delta bytes but leaves anti-entropy to
    # ship whole states: the per-like figure is only the product's cost when every delta went out.
    # False suspicions under load do not shrink the figure: what they cost is in the anti-entropy
    # bytes, which the verdict counts (it judges all gossip bytes, not deltas alone).
    complete = health["deltas_unsent"] == 0 and health["frames_dropped"] == 0
    healthy = complete and health["members_suspected"] == 0
    delta_items = sum(node.get("deltas_sent", 0) for node in per_node.values())
    results = {
        "measure": "gossip_bytes",
        "quick": quick,
        "host": host,
        "nodes": nodes,
        "rate": rate,
        "seconds": seconds,
        "items": items,
        "batches_per_s": batches_per_s,
        "ops_per_batch": plan.ops_per_batch,
        "gossip": gossip,
        "overrides": dict(overrides or {}),
        "load": load,
        "window_s": window_s,
        "cpu_during_load": cpu,
        "bytes": spent,
        "delta_bytes_per_like_per_peer": per_like["bytes_sent_deltas"],
        "delta_bytes_per_delta_sent": spent["bytes_sent_deltas"] / delta_items if delta_items else math.nan,
        "delta_items_sent": delta_items,
        "healthy": healthy,
        "complete": complete,
        "health": health,
        "all_bytes_per_like_per_peer": per_like["bytes_sent"],
        "anti_entropy_bytes_per_like_per_peer": per_like["bytes_sent_anti_entropy"],
        "membership_bytes_per_s": spent["bytes_sent_membership"] / window_s,
        "converged": checked["converged"],
        "converge_s": checked["converge_s"],
        "per_node": per_node,
        "count_totals": checked["count_totals"],
        "counts_exact": exact,
        "goals": {"gossip_bytes_per_like_per_peer": GOALS["gossip_bytes_per_like_per_peer"]},
        "met": {
            "gossip_bytes_per_like_per_peer": checked["converged"]
            and exact
            and likes == load["ops_offered"]
            and complete
            and per_like["bytes_sent"] <= GOALS["gossip_bytes_per_like_per_peer"]
        },
    }
    write_json(out, "gossip_bytes.json", results)
    return results


async def _read_views(urls: Sequence[str]) -> list[dict[str, Any]]:
    async with session() as client:
        return await _gossip_counters(client, urls)


def _per_node_changes(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Each node's gossip counters over the window (gauges such as ``members_alive`` as they ended):
    frames dropped, deltas unsent or members suspected explain a figure that looks wrong."""
    changes: dict[str, Any] = {}
    for old, new in zip(before, after, strict=True):
        start, end = old["gossip"], new["gossip"]
        changes[new["node"]["name"]] = {
            name: value - start[name] if name in start and name not in GAUGES else value
            for name, value in end.items()
            if isinstance(value, int) and not isinstance(value, bool)
        }
    return changes
