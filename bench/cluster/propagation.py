"""a. Propagation: replication lag on idle clusters of real processes (see the package)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster.report import GOALS
from bench.common import DEFAULT_OUT, host_info, run_async, session, summary_ms, write_json
from bench.launch import LocalCluster

#: Longest wait for one node to serve a like before the sample counts as missed, in seconds.
PROPAGATION_TIMEOUT = 5.0
#: Pause between two polls of one node, in seconds.
POLL_INTERVAL = 0.001
#: Shortest pause between two samples, in seconds: long enough for the cluster to be idle again. A
#: random extra of up to one delta interval follows, so writes fall at a uniformly random phase of the
#: nodes' delta timer; a fixed range would lock onto that period and bias the lag either way.
SAMPLE_PAUSE = 0.02


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
