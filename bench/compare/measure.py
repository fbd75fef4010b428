"""Measuring one system: our node as shipped, or a peer design as a process; the same load for each,
then what it stored checked against what it acknowledged."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import CpuSample, run_async
from bench.compare.placement import Placement, bound_by, busy_since, children_on, cpu_ticks
from bench.launch import DIRECT, LocalCluster, free_ports, get_json
from bench.load import LoadSpec, run_load
from bench.servers import Scratch, Stores

#: Likes/s offered to ours in the open-loop load.
OPEN_RATE = 3333
CONTENT_TYPE = "bench"
#: Each load's users start at a fresh multiple of this, so no like of one load repeats another's.
USER_BLOCK = 10**15

#: Bounds, in seconds: a peer's start, its stop (the usual design flushes its queue first), and the
#: wait for the usual design's queue to reach MySQL after the load.
PEER_START_TIMEOUT = 30.0
PEER_STOP_TIMEOUT = 45.0
DRAIN_TIMEOUT = 60.0
PEERS = {
    "noop": "bench.peers.noop",
    "redis_queue": "bench.peers.redis_queue",
    "mysql_upsert": "bench.peers.mysql_upsert",
}


class CompareError(RuntimeError):
    """A system could not be started or measured; the message says which and why."""


class PeerProcess:
    """``python -m bench.peers.<name> --port P ...`` on 127.0.0.1, ready once ``/healthz`` answers."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", PEERS[name], "--port", str(self.port), *args]
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + PEER_START_TIMEOUT
        for _ in range(int(PEER_START_TIMEOUT / 0.05) + 2):
            if self.process.poll() is not None:
                raise CompareError(f"peer {self.name} exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                if get_json(f"{self.url}/healthz", timeout=1.0).get("status") == "ok":
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop()
        raise CompareError(
            f"peer {self.name} did not answer within {PEER_START_TIMEOUT:.0f} s:\n{self.tail()}"
        )

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def stats(self) -> dict[str, Any]:
        """The peer's ``GET /stats`` (empty for the no-op, which has none)."""
        try:
            result = get_json(f"{self.url}/stats", timeout=5.0)
        except (OSError, urllib.error.URLError, ValueError):
            return {}
        return result if isinstance(result, dict) else {}

    def stop(self) -> int | None:
        """SIGTERM (a clean stop: the usual design flushes its queue), SIGKILL after the bound."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=PEER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10.0)
        return process.returncode

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Settings:
    """The client settings every system gets."""

    seconds: float
    warmup: float
    connections: int
    workers: int
    items: int
    open_rate: float
    open_seconds: float
    client: str
    max_requests: int


def load(
    settings: Settings,
    placement: Placement,
    urls: Sequence[str],
    watch: Mapping[str, int],
    *,
    mode: str,
    user_block: int,
) -> dict[str, Any]:
    """One load against ``urls`` with CPU sampled for ``watch`` (name -> pid) and the load workers."""
    spec = LoadSpec(
        urls=tuple(urls),
        mode="open" if mode == "open" else "closed",
        seconds=settings.open_seconds if mode == "open" else settings.seconds,
        rate=settings.open_rate if mode == "open" else 0.0,
        connections=settings.connections,
        workers=settings.workers,
        warmup=settings.warmup,
        max_requests=settings.max_requests,
        items=settings.items,
        content_type=CONTENT_TYPE,
        user_base=user_block * USER_BLOCK,
        cpus=placement.load_cpus,
        client="raw" if settings.client == "raw" else "aiohttp",
    )

    def on_measure(workers: Mapping[str, int]) -> Any:
        processes = CpuSample.take({**watch, **workers})
        per_cpu = cpu_ticks()

        def finish() -> dict[str, Any]:
            usage = processes.usage_since()
            usage["cpu_busy_share"] = busy_since(per_cpu)
            return usage

        return finish

    result = run_load(spec, on_measure=on_measure)
    for per_item in ("expected_counts", "uncertain_counts", "planned_counts", "planned_ops"):
        result.pop(per_item, None)  # ours is checked by its total below; the peers keep no items
    result["cpu"] = result.pop("watch", None)
    result["bound_by"] = bound_by(result["cpu"], placement)
    return result


def measure_ours(settings: Settings, placement: Placement, root: Path) -> dict[str, Any]:
    """One node as shipped: closed-loop maximum, then open loop at the offered rate; exactness after."""
    with children_on(placement.server_cpus):
        cluster = LocalCluster(1, root)
        cluster.start()
    try:
        view = cluster.cluster_views()[0]
        watch = {"server": int(view["node"]["pid"])}
        closed = load(settings, placement, cluster.urls, watch, mode="closed", user_block=1)
        opened = load(settings, placement, cluster.urls, watch, mode="open", user_block=2)
        after = cluster.cluster_views()[0]
        total = _count_total(cluster.urls[0], settings.items, cluster.api.max_count_items)
    finally:
        status = cluster.stop()
    acked = closed["changes_acked"] + opened["changes_acked"]
    wal = after.get("wal", {})
    return {
        "closed": closed,
        "open": opened,
        "wal": wal,
        "likes_per_fsync": wal["records"] / wal["fsyncs"] if wal.get("fsyncs") else None,
        "stored": total,
        "exact": total == acked,
        "changes_acked": acked,
        "exit_status": status,
    }


def _count_total(url: str, items: int, per_request: int) -> int:
    """Sum of every load item's count on the node, through ``POST /v1/counts``."""
    total = 0
    for first in range(0, items, per_request):
        refs = [{"type": CONTENT_TYPE, "id": i} for i in range(first, min(items, first + per_request))]
        request = urllib.request.Request(
            f"{url}/v1/counts",
            data=json.dumps({"items": refs}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with DIRECT.open(request, timeout=10.0) as response:
            total += sum(json.loads(response.read())["counts"])
    return total


def measure_peer(
    name: str, settings: Settings, placement: Placement, stores: Stores, log_dir: Path, user_block: int
) -> dict[str, Any]:
    """Start the peer on its own prefix / database, load it, check what it stored, clean up."""
    scratch = Scratch.fresh(stores, f"likes_bench_{name}")
    database, prefix = scratch.database, scratch.prefix
    args: list[str] = []
    if name == "redis_queue":
        args = ["--redis-url", stores.redis_url, "--redis-prefix", prefix]
    if name in ("redis_queue", "mysql_upsert"):
        args += ["--mysql-url", scratch.mysql_url]
    peer = PeerProcess(name, args, log_dir)
    try:
        with children_on(placement.server_cpus):
            peer.start()
        used = {"noop": (), "redis_queue": ("redis", "mysql"), "mysql_upsert": ("mysql",)}[name]
        watch = {"server": peer.pid, **{k: v for k, v in stores.pids().items() if k in used}}
        closed = load(settings, placement, [peer.url], watch, mode="closed", user_block=user_block)
        result: dict[str, Any] = {"closed": closed, "changes_acked": closed["changes_acked"]}
        if name == "redis_queue":
            result.update(_drain(peer), mysql_database=database, redis_prefix=prefix)
            (rows,) = stores.mysql(f"SELECT COUNT(*) FROM `{database}`.like_records")
            result["mysql_rows"] = int(rows[0])
            result["exact"] = result["mysql_rows"] == closed["changes_acked"]
        elif name == "mysql_upsert":
            result.update(peer_stats=peer.stats(), mysql_database=database)
            rows, counted = stores.mysql(
                f"SELECT COUNT(*) FROM `{database}`.like_records",
                f"SELECT COALESCE(SUM(like_count), 0) FROM `{database}`.like_counts",
            )
            result["mysql_rows"], result["stored"] = int(rows[0]), int(counted[0])
            result["exact"] = result["mysql_rows"] == result["stored"] == closed["changes_acked"]
        result["exit_status"] = peer.stop()
        return result
    finally:
        peer.stop()
        if name != "noop":
            run_async(scratch.close)


def _drain(peer: PeerProcess) -> dict[str, Any]:
    """How far MySQL was behind when the load ended, and how long the queue took to empty."""
    at_end = peer.stats()
    started = time.monotonic()
    stats = at_end
    for _ in range(int(DRAIN_TIMEOUT / 0.05) + 2):
        if stats.get("backlog", 0) == 0 or time.monotonic() - started > DRAIN_TIMEOUT:
            break
        time.sleep(0.05)
        stats = peer.stats()
    return {
        "backlog_at_end": at_end.get("backlog"),
        "mysql_drain_s": time.monotonic() - started,
        "drained": stats.get("backlog") == 0,
        "peer_stats": stats,
    }
