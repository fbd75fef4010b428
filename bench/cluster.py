"""Cluster measurements of issue 3: replication lag, anti-entropy cost, gossip bytes under load.

- **propagation**: on an idle cluster of real processes (``LocalCluster``), a like is PUT on a random
  node; from the moment its 200 arrives, every other node is polled (keep-alive, ~1 ms apart) until it
  answers ``liked: true``. A sample is the delay until *every* other node serves it (the max); the
  per-node delays are kept too. Samples are spaced by a random pause so each one meets an idle cluster
  and a random phase of the delta timer, whose interval bounds the lag from below.
- **anti-entropy**: two in-process ``Gossiper``s over real loopback TCP, each with a ``LikeStore``
  holding the same N items; one like on one side is made invisible to delta dissemination (its delta
  is drained and dropped), so only an anti-entropy round can carry it: the sweep A starts once the like
  has settled, or rounds the bench starts if that did not repair it. Bytes are the
  ``bytes_sent_anti_entropy`` of both sides from the like on; periodic rounds and delta pushes are
  switched off so nothing else is counted (``rounds`` = ``sweeps`` + ``rounds_started_here``).
- **gossip bytes**: a 3-node cluster takes a fixed-schedule load of distinct likes (``POST /v1/batch``
  from a separate process, so the client does not share an event loop with the measurement) and the
  nodes' gossip byte counters are read before and after; the figure is all gossip bytes (deltas,
  anti-entropy, membership) per like per peer. It only counts when every delta went out: a delta
  never sent costs no delta bytes but leaves anti-entropy to ship whole states. The run also reports
  failed probes, suspicions and bytes per delta actually sent. After the load the nodes must
  converge and every node's count total must equal the likes applied.

Timings default to the shipped ``cluster.yaml`` so the figures describe the product as configured.
Every loop is bounded in count and in time; a bound that is hit is reported, never waited out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import multiprocessing
import os
import queue
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.launch import LocalCluster, shipped_settings
from bench.load import run_async
from gossip import Gossiper, MemberState
from gossip.antientropy import SETTLE_INTERVALS
from node.config import ClusterConfig, GossipSettings, NodeSpec
from node.process.server import gossip_config
from node.state.item import ItemKey
from node.state.store import LikeStore

GOALS: dict[str, float] = {
    "propagation_p50_ms": 30.0,
    "propagation_p99_ms": 150.0,
    "anti_entropy_bytes": 64 * 1024,
    "gossip_bytes_per_like_per_peer": 40.0,
}
HOST = "127.0.0.1"
DEFAULT_OUT = Path("bench/results")

#: Longest wait for one node to serve a like before the sample counts as missed, in seconds.
PROPAGATION_TIMEOUT = 5.0
#: Pause between two polls of one node, in seconds.
POLL_INTERVAL = 0.001
#: Shortest pause between two samples, in seconds: long enough for the cluster to be idle again. A
#: random extra of up to one delta interval follows, so writes fall at a uniformly random phase of the
#: nodes' delta timer; a fixed range would lock onto that period and bias the lag either way.
SAMPLE_PAUSE = 0.02
#: Longest wait for the nodes' fingerprints to agree after a load, in seconds.
CONVERGE_TIMEOUT = 60.0
#: Anti-entropy rounds tried before giving up on a repair, and the wait after each, in seconds.
AE_MAX_ROUNDS = 10
AE_ROUND_WAIT = 3.0
#: Batches the load generator may have unanswered at once; past it, it falls behind (and says so).
MAX_IN_FLIGHT = 64
#: Multiplying by an odd constant modulo 2**63 maps distinct sequence numbers to distinct user ids
#: spread over 63 bits, as snowflake-style ids are: small ids would flatter the encoded sizes.
USER_SCRAMBLE = 0x9E3779B97F4A7C15
#: Loopback HTTP with no proxy from the environment; a stuck request fails instead of hanging.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)

_T = TypeVar("_T")


# -- helpers ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of delays given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
    }


def host_info() -> dict[str, Any]:
    """CPUs and load average when a measurement starts: other work on the machine skews latencies."""
    return {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}


def user_id(sequence: int) -> int:
    """The ``sequence``-th distinct user id (sequence >= 1), a 63-bit number."""
    return sequence * USER_SCRAMBLE % 2**63


def parse_overrides(pairs: Sequence[str]) -> dict[str, int]:
    """``["delta_interval_ms=20"]`` as gossip overrides for ``LocalCluster``; ValueError if malformed."""
    overrides: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value.isdigit():
            raise ValueError(f"expected KEY=INTEGER, got {pair!r}")
        overrides[key.strip()] = int(value)
    known = {f.name for f in dataclasses.fields(GossipSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown gossip setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return overrides


def session() -> aiohttp.ClientSession:
    """A keep-alive client session for loopback: no proxy from the environment, bounded requests."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=REQUEST_TIMEOUT,
        trust_env=False,
    )


def write_json(out: Path | None, name: str, results: Mapping[str, Any]) -> None:
    """Write ``results`` as ``out/name`` (no file when ``out`` is None)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(results, indent=2) + "\n")


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.05
) -> tuple[bool, float]:
    """Await ``check`` until true or ``timeout`` seconds; (held, seconds waited). Bounded in count too."""
    started = time.perf_counter()
    for _ in range(int(timeout / interval) + 2):
        if await check():
            return True, time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            break
        await asyncio.sleep(interval)
    return False, time.perf_counter() - started


# -- a. propagation ----------------------------------------------------------------------------------


async def _until_liked(
    client: aiohttp.ClientSession, url: str, acked: float, timeout: float, interval: float
) -> float | None:
    """Seconds from ``acked`` until ``GET url`` says liked; None if not within ``timeout``."""
    deadline = acked + timeout
    for _ in range(int(timeout / interval) + 2):
        async with client.get(url) as response:
            body = await response.json()
        now = time.perf_counter()
        if response.status == 200 and body.get("liked") is True:
            return now - acked
        if now > deadline:
            return None
        await asyncio.sleep(interval)
    return None


async def _propagation_samples(
    urls: Sequence[str], names: Sequence[str], samples: int, rng: random.Random, pause: tuple[float, float]
) -> list[dict[str, Any]]:
    """Write on a random node, time until every other node serves the like; one record per sample."""
    records: list[dict[str, Any]] = []
    async with session() as client:
        for url in urls:  # open the keep-alive connections before the first sample
            async with client.get(f"{url}/healthz") as response:
                await response.read()
        for i in range(samples):
            writer = rng.randrange(len(urls))
            user = rng.getrandbits(63)
            path = f"/v1/items/prop/{i}/likes/{user}"
            sent = time.perf_counter()
            async with client.put(urls[writer] + path) as response:
                body = await response.json()
            acked = time.perf_counter()
            if response.status != 200 or body.get("changed") is not True:
                raise RuntimeError(f"PUT {path} on {names[writer]} answered {response.status} {body}")
            others = [j for j in range(len(urls)) if j != writer]
            polls = (
                _until_liked(client, urls[j] + path, acked, PROPAGATION_TIMEOUT, POLL_INTERVAL)
                for j in others
            )
            delays = await asyncio.gather(*polls)
            records.append(
                {
                    "writer": names[writer],
                    "ack_ms": (acked - sent) * 1000,
                    "delays_ms": {
                        names[j]: None if d is None else d * 1000 for j, d in zip(others, delays, strict=True)
                    },
                }
            )
            await asyncio.sleep(rng.uniform(*pause))
    return records


def _propagation_figures(records: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Percentiles of the every-node delay, of each node's own delays, and of the write acks."""
    timeout_ms = PROPAGATION_TIMEOUT * 1000
    every: list[float] = []
    per_node: dict[str, list[float]] = {name: [] for name in names}
    missed = 0
    for record in records:
        delays = record["delays_ms"]
        if any(d is None for d in delays.values()):
            missed += 1
        # A miss counts as the timeout: it can only make the percentiles worse, never hide.
        every.append(max(timeout_ms if d is None else d for d in delays.values()) / 1000)
        for name, d in delays.items():
            per_node[name].append((timeout_ms if d is None else d) / 1000)
    pooled = [d for values in per_node.values() for d in values]
    return {
        "samples": len(records),
        "missed": missed,
        **summary_ms(every),
        "any_peer": summary_ms(pooled),
        "per_node": {name: {"count": len(v), **summary_ms(v)} for name, v in per_node.items() if v},
        "ack": summary_ms([r["ack_ms"] / 1000 for r in records]),
    }


def propagation(
    *,
    nodes: Sequence[int] = (3, 5),
    samples: int = 300,
    quick: bool = False,
    out: Path | None = DEFAULT_OUT,
    root: Path | None = None,
    seed: int = 3,
    overrides: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Replication lag on idle clusters of each size in ``nodes``; writes ``propagation.json``."""
    if quick:
        samples = min(samples, 20)
    host = host_info()
    rng = random.Random(seed)
    clusters: dict[str, Any] = {}
    gossip: dict[str, int] = {}
    for n in nodes:
        with LocalCluster(n, root, gossip=overrides) as cluster:
            gossip = cluster.gossip
            pause = (SAMPLE_PAUSE, SAMPLE_PAUSE + gossip["delta_interval_ms"] / 1000)
            records = run_async(
                partial(_propagation_samples, cluster.urls, cluster.names, samples, rng, pause)
            )
        clusters[str(n)] = {"nodes": n, **_propagation_figures(records, cluster.names), "raw": records}
    met = {
        f"{n}_nodes": c["missed"] == 0
        and c["p50_ms"] <= GOALS["propagation_p50_ms"]
        and c["p99_ms"] <= GOALS["propagation_p99_ms"]
        for n, c in clusters.items()
    }
    results = {
        "measure": "propagation",
        "quick": quick,
        "host": host,
        "samples": samples,
        "poll_interval_ms": POLL_INTERVAL * 1000,
        "timeout_ms": PROPAGATION_TIMEOUT * 1000,
        "pause_ms": [SAMPLE_PAUSE * 1000, SAMPLE_PAUSE * 1000 + gossip.get("delta_interval_ms", 0)],
        "gossip": gossip,
        "overrides": dict(overrides or {}),
        "clusters": clusters,
        "goals": {k: GOALS[k] for k in ("propagation_p50_ms", "propagation_p99_ms")},
        "met": met,
    }
    write_json(out, "propagation.json", results)
    return results


# -- b. anti-entropy -------------------------------------------------------------------------------


def _ae_gossiper(name: str, store: LikeStore, secret: bytes, seed: Gossiper | None) -> Gossiper:
    """A gossiper configured as a node of the shipped cluster file would be, on a free port, with no
    periodic anti-entropy: only the rounds the measurement starts send anti-entropy bytes. Deltas keep
    the shipped interval (anti-entropy leaves a key alone for a few of them after it changes)."""
    gossip, api = shipped_settings()
    specs = [NodeSpec(name, HOST, http_port=1, gossip_port=0)]
    if seed is not None:
        specs.append(NodeSpec(seed.name, HOST, http_port=1, gossip_port=seed.address[1]))
    config = gossip_config(ClusterConfig(nodes=tuple(specs), gossip=gossip, api=api), specs[0], secret)
    quiet = dataclasses.replace(config, anti_entropy_interval=3600.0)
    return Gossiper(quiet, store, rng=random.Random(name))


def _ae_bytes(*gossipers: Gossiper) -> int:
    return sum(g.stats()["bytes_sent_anti_entropy"] for g in gossipers)


def _ae_rounds(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_rounds"] for g in gossipers)


async def _anti_entropy(items: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    # Writer ids shaped like a node's (name, 16 hex digits, incarnation): they are inside every state.
    store_a = LikeStore(f"a-{rng.getrandbits(64):016x}.1")
    store_b = LikeStore(f"b-{rng.getrandbits(64):016x}.1")
    keys = [ItemKey("ae", i) for i in range(items)]
    loading = time.perf_counter()
    for key in keys:
        for _ in range(rng.randint(1, 3)):
            store_a.like(key, rng.getrandbits(63))
    store_a.drain_deltas()  # the loaded state reaches B by merge below, not by gossip
    for key in keys:
        raw = key.to_bytes()
        state = store_a.state(raw)
        assert state is not None
        store_b.merge(raw, state)
    load_s = time.perf_counter() - loading
    if store_a.fingerprint() != store_b.fingerprint():
        raise RuntimeError("the two stores differ after loading")

    secret = random.Random(seed).randbytes(32)
    a = _ae_gossiper("a", store_a, secret, None)
    await a.start()
    b = _ae_gossiper("b", store_b, secret, a)
    try:
        await b.start()

        async def in_contact() -> bool:
            return a.stats()["members_alive"] == 1 and b.stats()["members_alive"] == 1

        contact, _ = await eventually(in_contact, timeout=10)
        if not contact:
            raise RuntimeError("the two gossipers did not see each other alive within 10 s")

        # An in-sync round first: what a round costs when nothing differs.
        before = _ae_bytes(a, b)
        in_sync_before = b.stats()["anti_entropy_in_sync"]
        a.anti_entropy_round()

        async def acknowledged_in_sync() -> bool:
            return b.stats()["anti_entropy_in_sync"] > in_sync_before

        await eventually(acknowledged_in_sync, timeout=AE_ROUND_WAIT, interval=0.005)
        await asyncio.sleep(0.1)
        in_sync_bytes = _ae_bytes(a, b) - before

        # One like only anti-entropy can carry: its delta is drained and dropped. Once it has settled,
        # A's sweep starts the round that repairs it; rounds are started here only if that did not.
        target, user = keys[rng.randrange(items)], rng.getrandbits(63)
        before, rounds_before, sweeps_before = _ae_bytes(a, b), _ae_rounds(a, b), _ae_sweeps(a, b)
        side_before = (_ae_bytes(a), _ae_bytes(b))
        repaired_before = _ae_repaired(a, b)
        started = time.perf_counter()
        store_a.like(target, user)
        store_a.drain_deltas()

        async def b_has_it() -> bool:
            return store_b.liked(target, user)

        settle = SETTLE_INTERVALS * shipped_settings()[0].delta_interval_ms / 1000
        repaired, _ = await eventually(b_has_it, timeout=settle + AE_ROUND_WAIT, interval=0.002)
        rounds = 0
        while not repaired and rounds < AE_MAX_ROUNDS:
            if a.anti_entropy_round():
                rounds += 1
            repaired, _ = await eventually(b_has_it, timeout=AE_ROUND_WAIT, interval=0.002)
        repair_s = time.perf_counter() - started
        await asyncio.sleep(0.2)  # a push-pull round may end with a frame back to A: count it too
        spent = _ae_bytes(a, b) - before

        async def all_indexed() -> bool:  # every key indexed again once the changed one settled
            return bool(a.stats()["anti_entropy_keys_indexed"] == items)

        await eventually(all_indexed, timeout=AE_ROUND_WAIT, interval=0.01)
        return {
            "items": items,
            "load_s": load_s,
            "repaired": repaired,
            "converged": store_a.fingerprint() == store_b.fingerprint(),
            "bytes": spent,
            "bytes_by_side": {"a": _ae_bytes(a) - side_before[0], "b": _ae_bytes(b) - side_before[1]},
            "rounds": _ae_rounds(a, b) - rounds_before,
            "rounds_started_here": rounds,
            "sweeps": _ae_sweeps(a, b) - sweeps_before,
            "keys_repaired": _ae_repaired(a, b) - repaired_before,
            "repair_ms": repair_s * 1000,
            "in_sync_round_bytes": in_sync_bytes,
            "keys_indexed": a.stats()["anti_entropy_keys_indexed"],
        }
    finally:
        await b.stop()
        await a.stop()


def _ae_sweeps(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_sweeps"] for g in gossipers)


def _ae_repaired(*gossipers: Gossiper) -> int:
    return sum(g.stats()["anti_entropy_keys_repaired"] for g in gossipers)


def anti_entropy(
    *, items: int = 100_000, quick: bool = False, out: Path | None = DEFAULT_OUT, seed: int = 5
) -> dict[str, Any]:
    """Anti-entropy bytes to repair one differing item among ``items``; writes ``anti_entropy.json``."""
    if quick:
        items = min(items, 10_000)
    host = host_info()
    figures = run_async(lambda: _anti_entropy(items, seed))
    results = {
        "measure": "anti_entropy",
        "quick": quick,
        "host": host,
        **figures,
        "goals": {"anti_entropy_bytes": GOALS["anti_entropy_bytes"]},
        "met": {
            "anti_entropy_bytes": figures["repaired"]
            and figures["converged"]
            and figures["bytes"] <= GOALS["anti_entropy_bytes"]
        },
    }
    write_json(out, "anti_entropy.json", results)
    return results


# -- c. gossip bytes under load --------------------------------------------------------------------

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


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU seconds of some processes and of the whole machine (Linux ``/proc``): figures taken on a
    saturated or shared machine must say so, or an overloaded node reads as a slow design."""

    at: float
    pids: dict[str, int]
    processes: dict[str, float | None]
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, pids: Mapping[str, int]) -> CpuSample:
        """CPU seconds of each named pid (None if unreadable) and the machine's (busy, total) ticks."""
        return cls(
            time.perf_counter(),
            dict(pids),
            {name: _process_cpu(pid) for name, pid in pids.items()},
            _machine_ticks(),
        )

    def usage_since(self) -> dict[str, Any]:
        """Cores each process used since this sample, and the busy share of the whole machine."""
        now = CpuSample.take(self.pids)
        elapsed = max(now.at - self.at, 1e-9)
        cores: dict[str, float | None] = {}
        for name, start in self.processes.items():
            end = now.processes.get(name)
            cores[name] = None if start is None or end is None else (end - start) / elapsed
        share = None
        if self.machine is not None and now.machine is not None:
            busy, total = (b - a for a, b in zip(self.machine, now.machine, strict=True))
            share = busy / total if total > 0 else None
        return {"cores": cores, "machine_busy_share": share, "cpus": os.cpu_count()}


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, from ``/proc/PID/stat``; None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_ticks() -> tuple[float, float] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from ``/proc/stat``."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return float(total - idle), float(total)


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


# -- all of them -----------------------------------------------------------------------------------


def run_all(*, quick: bool = False, out: Path | None = DEFAULT_OUT) -> dict[str, dict[str, Any]]:
    """The three measurements with their defaults (small ones in quick mode)."""
    results = {
        "propagation": propagation(quick=quick, out=out),
        "anti_entropy": anti_entropy(quick=quick, out=out),
        "gossip_bytes": gossip_bytes(quick=quick, out=out),
    }
    if out is not None:
        (out / "cluster.md").write_text(render(results) + "\n")
    return results


def all_met(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether every goal of every measurement in ``results`` (one or several) was met."""
    measures = [results] if "measure" in results else list(results.values())
    return all(all(m["met"].values()) for m in measures)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: Mapping[str, Any]) -> str:
    """A markdown table of whichever measurements ``results`` holds (one result or several by name)."""
    measures = {results["measure"]: results} if "measure" in results else dict(results)
    rows: list[tuple[str, str, str]] = []
    prop = measures.get("propagation")
    if prop is not None:
        interval = prop["gossip"].get("delta_interval_ms")
        for n, c in prop["clusters"].items():
            missed = f", {c['missed']} missed" if c["missed"] else ""
            ok = c["missed"] == 0 and c["p50_ms"] <= GOALS["propagation_p50_ms"]
            ok = ok and c["p99_ms"] <= GOALS["propagation_p99_ms"]
            rows.append(
                (
                    f"propagation, {n} nodes: ack until every other node serves the like "
                    f"({c['samples']} samples, delta interval {interval} ms)",
                    f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms{missed}",
                    f"p50 <= 30 ms, p99 <= 150 ms: {_verdict(ok)}",
                )
            )
            peer = c["any_peer"]
            rows.append(
                (
                    f"propagation, {n} nodes: ack until one given peer serves it",
                    f"p50 {peer['p50_ms']:.1f} ms, p99 {peer['p99_ms']:.1f} ms, max {peer['max_ms']:.1f} ms",
                    "",
                )
            )
    ae = measures.get("anti_entropy")
    if ae is not None:
        state = "" if ae["repaired"] and ae["converged"] else " (NOT repaired)"
        rows.append(
            (
                f"anti-entropy: repair 1 differing item among {ae['items']:,} (both sides' bytes)",
                f"{ae['bytes']:,} B in {ae['rounds']} round(s), {ae['repair_ms']:.0f} ms{state}; "
                f"in-sync round {ae['in_sync_round_bytes']} B",
                f"<= 64 KiB: {_verdict(ae['met']['anti_entropy_bytes'])}",
            )
        )
    gb = measures.get("gossip_bytes")
    if gb is not None:
        load = gb["load"]
        rows.append(
            (
                f"gossip bytes per like per peer, {gb['nodes']} nodes, {gb['rate']:,} likes/s offered "
                f"for {gb['seconds']:g} s (achieved {load['achieved_rate']:,.0f}/s)",
                f"{gb['delta_bytes_per_like_per_peer']:.1f} B deltas; "
                f"{gb['all_bytes_per_like_per_peer']:.1f} B all gossip",
                f"<= 40 B (all gossip): {_verdict(gb['met']['gossip_bytes_per_like_per_peer'])}",
            )
        )
        health = gb["health"]
        rows.append(
            (
                "gossip during that load: bytes per delta item actually sent; cluster health",
                f"{gb['delta_bytes_per_delta_sent']:.1f} B per (item, delta) per peer; "
                f"{gb['anti_entropy_bytes_per_like_per_peer']:.1f} B/like/peer anti-entropy; "
                f"{health['deltas_unsent']:,} deltas unsent, {health['probe_failures']} failed probes, "
                f"{health['members_suspected']} suspicions, {health['members_declared_dead']} deaths",
                "healthy"
                if gb["healthy"]
                else (
                    "every delta sent; false suspicions (CPU saturated)"
                    if gb["complete"]
                    else "**deltas unsent: the per-like figure understates**"
                ),
            )
        )
        cpu = gb["cpu_during_load"]
        node_cores = [c for name, c in cpu["cores"].items() if name != "load_generator" and c is not None]
        generator = cpu["cores"].get("load_generator")
        share = cpu["machine_busy_share"]
        if node_cores and share is not None and generator is not None:
            rows.append(
                (
                    "CPU during the load",
                    f"nodes {sum(node_cores):.2f} cores in all "
                    f"({', '.join(f'{c:.2f}' for c in node_cores)}), "
                    f"load generator {generator:.2f}; machine {share:.0%} busy of {cpu['cpus']} CPUs",
                    "",
                )
            )
        totals = ", ".join(f"{t:,}" for t in gb["count_totals"])
        rows.append(
            (
                "after the load: converged, every node's count total = likes applied",
                f"converged: {'yes' if gb['converged'] else 'NO'} in {gb['converge_s']:.2f} s; "
                f"{load['likes_applied']:,} applied, totals {totals}",
                "exact" if gb["counts_exact"] else "**NOT exact**",
            )
        )
    lines = ["| measure | result | vs goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    changed = {
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in m["overrides"].items())
        for name, m in measures.items()
        if m.get("overrides")
    }
    if changed:
        lines.append("")
        lines.append("Not the shipped gossip timings: " + "; ".join(sorted(changed)))
    return "\n".join(lines)
