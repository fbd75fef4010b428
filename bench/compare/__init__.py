"""Like throughput of our node against three peers, in one run on one machine (issue 5).

Systems, each started by this run and stopped after it:

- **ours**: one node of the shipped ``cluster.yaml`` (``LocalCluster``, ``likes up``): WAL with
  ``fsync: always`` and group commit, SQLite checkpoints, as it ships;
- **noop**: ``bench.peers.noop``, the ceiling of one Python HTTP process;
- **redis_queue**: ``bench.peers.redis_queue``, the usual design (Redis Lua per like, MySQL behind a
  queue), on its own key prefix and its own MySQL database;
- **mysql_upsert**: ``bench.peers.mysql_upsert``, one MySQL transaction per like, own database.

Each gets the same closed-loop load (``bench.load``: ``connections`` outstanding requests, distinct
users, ``items`` items, a warm-up that is not recorded): its maximum like throughput and the latency
that comes with it. Ours also gets an open-loop load at 3,333 likes/s, latency from intended send
times. Where the machine allows (two CPUs or more) the servers run on CPU 0 and the load generator
on CPU 1: a server inherits the affinity this process has while starting it. Redis and MariaDB are
the machine's services and are not pinned, so the peers that use them get CPU beyond core 0: that
can only flatter them. CPU use of every process is sampled during each load, which says what bounded
a figure (``bound_by``): the server's core, the load generator's, or neither (waiting on I/O).

After each load the stored result is checked against what was acknowledged: ours (sum of counts),
MySQL rows and counters of the peers, and how long the usual design's queue took to reach MySQL.
Output: ``compare.json``, ``compare.md`` and ``compare.png`` (throughput and latency per system).
Goals: ours >= 0.8x the no-op, >= 1.7x the usual design; at 3,333/s offered, p99 <= 25 ms, no error.

Modules: ``placement`` (CPUs, and what bounded a figure), ``measure`` (one system) and ``report``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_OUT, host_info, write_json
from bench.compare.measure import OPEN_RATE, PEERS, CompareError, Settings, measure_ours, measure_peer
from bench.compare.placement import LOAD_CPUS, Placement
from bench.compare.report import GOALS, all_met, render, summarize
from bench.servers import LOCAL_MYSQL_URL, LOCAL_REDIS_URL, Stores

__all__ = ["GOALS", "LOAD_CPUS", "OPEN_RATE", "CompareError", "all_met", "render", "run"]


def run(
    *,
    quick: bool = False,
    seconds: float = 15.0,
    connections: int = 64,
    out: Path | None = DEFAULT_OUT,
    redis_url: str = LOCAL_REDIS_URL,
    mysql_url: str = LOCAL_MYSQL_URL,
    rate: float = OPEN_RATE,
    items: int = 1000,
    workers: int = 1,
    client: str = "raw",
    root: Path | None = None,
) -> dict[str, Any]:
    """Measure ours and the three peers; write ``compare.json`` and ``compare.md`` under ``out``."""
    if quick:
        seconds = min(seconds, 2.0)
    settings = Settings(
        seconds=seconds,
        warmup=0.5 if quick else 1.0,
        connections=connections,
        workers=workers,
        items=items,
        open_rate=rate,
        open_seconds=seconds,
        client=client,
        max_requests=max(10_000, int(100_000 * seconds)),
    )
    placement = Placement.detect()
    stores = Stores(redis_url, mysql_url)
    unreachable = stores.reachable()
    if unreachable:
        raise CompareError("; ".join(unreachable.values()))
    host = host_info()
    systems: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="likes-compare-") as scratch:
        work = Path(scratch) if root is None else root
        systems["ours"] = measure_ours(settings, placement, work)
        for block, name in enumerate(PEERS, start=3):
            systems[name] = measure_peer(name, settings, placement, stores, work, block)
    results = summarize(systems, settings, placement, stores, quick, host)
    write_json(out, "compare.json", results)
    if out is not None:
        (out / "compare.md").write_text(render(results) + "\n")
        from bench import charts  # matplotlib loads only when a chart is drawn

        charts.compare_chart(results, out / "compare.png")
    return results
