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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncmy
from redis.asyncio import Redis

from bench.cluster import CpuSample, host_info, write_json
from bench.launch import LocalCluster, free_ports, get_json
from bench.load import LoadSpec, pinning_possible, run_async, run_load

GOALS: dict[str, float] = {"vs_noop": 0.8, "vs_usual": 1.7, "open_p99_ms": 25.0}
DEFAULT_OUT = Path("bench/results")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306"
OPEN_RATE = 3333
CONTENT_TYPE = "bench"
#: Each load's users start at a fresh multiple of this, so no like of one load repeats another's.
USER_BLOCK = 10**15
SERVER_CPUS, LOAD_CPUS = (0,), (1,)
#: Bounds, in seconds: a peer's start, its stop (the usual design flushes its queue first), the wait
#: for the usual design's queue to reach MySQL after the load, and one admin call to Redis or MySQL.
PEER_START_TIMEOUT = 30.0
PEER_STOP_TIMEOUT = 45.0
DRAIN_TIMEOUT = 60.0
ADMIN_TIMEOUT = 10.0
#: A process using at least this share of its core(s) is what bounded the throughput.
SATURATED = 0.9
PEERS = {
    "noop": "bench.peers.noop",
    "redis_queue": "bench.peers.redis_queue",
    "mysql_upsert": "bench.peers.mysql_upsert",
}
#: Talks to our node directly: a proxy from the environment must not sit between us and loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_T = TypeVar("_T")


class CompareError(RuntimeError):
    """A system could not be started or measured; the message says which and why."""


# -- placement -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which CPUs the servers and the load generator run on, if pinning applies here."""

    applied: bool
    server_cpus: tuple[int, ...] | None
    load_cpus: tuple[int, ...] | None

    @classmethod
    def detect(cls) -> Placement:
        if pinning_possible(SERVER_CPUS + LOAD_CPUS):
            return cls(True, SERVER_CPUS, LOAD_CPUS)
        return cls(False, None, None)

    def describe(self) -> str:
        if not self.applied:
            return "not applied (fewer than 2 usable CPUs): servers and load share every CPU"
        return (
            f"applied: servers on CPU {','.join(map(str, self.server_cpus or ()))}, load generator on "
            f"CPU {','.join(map(str, self.load_cpus or ()))}; Redis and MariaDB (system services) unpinned"
        )


@contextlib.contextmanager
def children_on(cpus: Sequence[int] | None) -> Iterator[None]:
    """While inside, processes started from this thread inherit affinity ``cpus`` (None: unchanged)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- peers as processes ------------------------------------------------------------------------------


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


# -- Redis and MySQL administration --------------------------------------------------------------------


@dataclass(frozen=True)
class Stores:
    """The Redis and MySQL servers the peers use (``mysql_url`` names a server, no database)."""

    redis_url: str
    mysql_url: str

    def mysql_args(self) -> dict[str, Any]:
        parts = urlsplit(self.mysql_url)
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": parts.username or "root",
            "password": parts.password or "",
        }

    def database_url(self, database: str) -> str:
        return f"{self.mysql_url.rstrip('/')}/{database}"

    async def _mysql(self, statements: Sequence[str]) -> list[Any]:
        """Each statement's first row (None for none), on one autocommit connection, bounded."""
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(ADMIN_TIMEOUT):
                conn = await asyncmy.connect(
                    **self.mysql_args(), autocommit=True, connect_timeout=ADMIN_TIMEOUT
                )
            stack.callback(conn.close)
            rows = []
            for statement in statements:
                async with asyncio.timeout(ADMIN_TIMEOUT), conn.cursor() as cursor:
                    await cursor.execute(statement)
                    rows.append(await cursor.fetchone())
            return rows

    def mysql(self, *statements: str) -> list[Any]:
        return run_async(lambda: self._mysql(statements))

    async def _redis(self, action: Callable[[Redis], Awaitable[_T]]) -> _T:
        client = Redis.from_url(
            self.redis_url, socket_timeout=ADMIN_TIMEOUT, socket_connect_timeout=ADMIN_TIMEOUT
        )
        try:
            return await action(client)
        finally:
            await client.aclose()

    def redis(self, action: Callable[[Redis], Awaitable[_T]]) -> _T:
        """Run ``action`` with a fresh client, closed afterwards."""
        return run_async(lambda: self._redis(action))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; how many there were."""

        async def delete(client: Redis) -> int:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
            return len(keys)

        return self.redis(delete)

    def reachable(self) -> dict[str, str]:
        """What is not reachable, with why (empty when both are)."""
        problems = {}
        try:
            self.redis(lambda client: client.ping())
        except Exception as exc:
            problems["redis"] = f"Redis at {self.redis_url}: {exc!r}"
        try:
            self.mysql("SELECT 1")
        except Exception as exc:
            problems["mysql"] = f"MySQL at {self.mysql_url}: {exc!r}"
        return problems

    def pids(self) -> dict[str, int]:
        """The Redis and MariaDB server processes, to sample their CPU (absent when not local)."""
        found: dict[str, int] = {}
        with contextlib.suppress(Exception):
            found["redis"] = int(self.redis(lambda client: client.info("server"))["process_id"])
        with contextlib.suppress(Exception):
            (row,) = self.mysql("SELECT @@pid_file")
            found["mysql"] = int(Path(row[0]).read_text().strip())
        return {name: pid for name, pid in found.items() if Path(f"/proc/{pid}").exists()}

    def settings(self) -> dict[str, Any]:
        """What durability the stores give the peers: it is part of what they are compared on."""
        found: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for key in ("appendonly", "appendfsync", "save"):
                reply = self.redis(lambda client, key=key: client.config_get(key))  # type: ignore[misc]
                value = reply.get(key, reply.get(key.encode()))
                found[f"redis_{key}"] = value.decode() if isinstance(value, bytes) else value
        with contextlib.suppress(Exception):
            rows = self.mysql(
                "SELECT @@innodb_flush_log_at_trx_commit", "SELECT @@sync_binlog", "SELECT VERSION()"
            )
            found["mysql_innodb_flush_log_at_trx_commit"] = int(rows[0][0])
            found["mysql_sync_binlog"] = int(rows[1][0])
            found["mysql_version"] = rows[2][0]
        return found


# -- measuring one system ------------------------------------------------------------------------------


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


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """(busy, total) ticks of each CPU since boot, from ``/proc/stat`` (empty where unavailable)."""
    ticks: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [int(v) for v in fields[:8]]
                idle = values[3] + values[4]  # idle + iowait
                ticks[name] = (sum(values) - idle, sum(values))
    return ticks


def busy_since(before: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """Each CPU's busy share since ``before``: a server pinned to a core other work also wants is
    capped by the core, not by its own code, and only these shares show that."""
    shares = {}
    for name, (busy, total) in cpu_ticks().items():
        if name in before and total > before[name][1]:
            shares[name] = (busy - before[name][0]) / (total - before[name][1])
    return shares


def bound_by(cpu: Mapping[str, Any] | None, placement: Placement) -> str:
    """What most likely capped the rate: the server's core, the load generator's, or neither."""
    if not cpu:
        return "unknown"
    cores, busy = cpu["cores"], cpu.get("cpu_busy_share", {})
    server = cores.get("server") or 0.0
    generator = sum(c for name, c in cores.items() if name.startswith("load_generator") and c is not None)
    if not placement.applied:
        if server >= SATURATED:
            return "server process CPU"
        return "machine CPU (not pinned)" if (cpu.get("machine_busy_share") or 0) >= SATURATED else "I/O"
    server_core = min((busy.get(f"cpu{c}", 0.0) for c in placement.server_cpus or ()), default=0.0)
    load_core = min((busy.get(f"cpu{c}", 0.0) for c in placement.load_cpus or ()), default=0.0)
    if server >= SATURATED:
        return "server process CPU"
    if server_core >= SATURATED:
        return f"server core, shared ({server:.2f} of it for the server)"
    if generator >= SATURATED * len(placement.load_cpus or (1,)) or load_core >= SATURATED:
        return "load generator core (a lower bound)"
    return "neither core: waiting on I/O"


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
        with _DIRECT.open(request, timeout=10.0) as response:
            total += sum(json.loads(response.read())["counts"])
    return total


def measure_peer(
    name: str, settings: Settings, placement: Placement, stores: Stores, log_dir: Path, user_block: int
) -> dict[str, Any]:
    """Start the peer on its own prefix / database, load it, check what it stored, clean up."""
    token = secrets.token_hex(4)
    database = f"likes_bench_{name}_{token}"
    prefix = f"likes-bench-{token}:"
    args: list[str] = []
    if name == "redis_queue":
        args = ["--redis-url", stores.redis_url, "--redis-prefix", prefix]
    if name in ("redis_queue", "mysql_upsert"):
        args += ["--mysql-url", stores.database_url(database)]
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
            with contextlib.suppress(Exception):
                stores.mysql(f"DROP DATABASE IF EXISTS `{database}`")
            with contextlib.suppress(Exception):
                stores.delete_prefix(prefix)


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


# -- the whole comparison -----------------------------------------------------------------------------


def run(
    *,
    quick: bool = False,
    seconds: float = 15.0,
    connections: int = 64,
    out: Path | None = DEFAULT_OUT,
    redis_url: str = DEFAULT_REDIS_URL,
    mysql_url: str = DEFAULT_MYSQL_URL,
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


def summarize(
    systems: Mapping[str, Any],
    settings: Settings,
    placement: Placement,
    stores: Stores,
    quick: bool,
    host: Mapping[str, Any],
) -> dict[str, Any]:
    """Ratios, goals and everything measured, as one JSON-able record."""
    rate = {name: system["closed"]["achieved_rate"] for name, system in systems.items()}

    def ratio(other: str) -> float:
        return rate["ours"] / rate[other] if rate.get(other) else math.nan

    ratios = {"vs_noop": ratio("noop"), "vs_usual": ratio("redis_queue"), "vs_mysql": ratio("mysql_upsert")}
    opened = systems["ours"]["open"]
    p99 = opened["latency"]["p99_ms"]
    clean = opened["error_count"] == 0 and all(s["closed"]["error_count"] == 0 for s in systems.values())
    met = {
        "vs_noop": ratios["vs_noop"] >= GOALS["vs_noop"],
        "vs_usual": ratios["vs_usual"] >= GOALS["vs_usual"],
        "open_p99_ms": p99 is not None and p99 <= GOALS["open_p99_ms"] and opened["error_count"] == 0,
    }
    return {
        "measure": "compare",
        "quick": quick,
        "commit": source_commit(),
        "host": dict(host),
        "pinning": {
            "applied": placement.applied,
            "server_cpus": placement.server_cpus,
            "load_cpus": placement.load_cpus,
            "description": placement.describe(),
        },
        "settings": dataclasses.asdict(settings),
        "stores": stores.settings(),
        "throughput": rate,
        "ratios": ratios,
        "no_errors": clean,
        "exact": {name: s.get("exact") for name, s in systems.items() if "exact" in s},
        "systems": dict(systems),
        "goals": GOALS,
        "met": met,
    }


def source_commit() -> str | None:
    """The measured code's commit, then ``+dirty:`` and the changed tracked files if the work tree
    differs from it (None outside git): a figure must name the code it describes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    changed = sorted(line[3:] for line in status.splitlines() if line[3:])
    return head[:12] + (f"+dirty: {', '.join(changed)}" if changed else "")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _latency(result: Mapping[str, Any]) -> str:
    lat = result["latency"]
    return (
        f"p50 {_ms(lat['p50_ms'])} / p99 {_ms(lat['p99_ms'])} / p99.9 {_ms(lat['p99_9_ms'])} / "
        f"max {_ms(lat['max_ms'])} ms"
    )


def _errors(result: Mapping[str, Any]) -> str:
    errors = result["errors"]
    if not errors and not result.get("unchanged"):
        return "0"
    parts = [f"{kind}: {count}" for kind, count in sorted(errors.items())]
    if result.get("unchanged"):
        parts.append(f"unchanged: {result['unchanged']}")
    return ", ".join(parts)


def _cpu(result: Mapping[str, Any]) -> str:
    cpu = result.get("cpu") or {}
    cores = cpu.get("cores", {})
    shown = []
    for name in ("server", "redis", "mysql"):
        if cores.get(name) is not None:
            shown.append(f"{name} {cores[name]:.2f}")
    generator = [c for n, c in cores.items() if n.startswith("load_generator") and c is not None]
    if generator:
        shown.append(f"load {sum(generator):.2f}")
    busy = cpu.get("cpu_busy_share") or {}
    if busy:
        shown.append("busy " + ", ".join(f"{name} {share:.0%}" for name, share in sorted(busy.items())))
    return ", ".join(shown) or "n/a"


NAMES = {
    "ours": "ours: one node, fsync always (WAL group commit), SQLite checkpoints",
    "noop": "no-op aiohttp handler (path validation, constant body)",
    "redis_queue": "usual design: Redis Lua per like + queued MySQL batches",
    "mysql_upsert": "one MySQL transaction per like (upsert + counter row)",
}


def render(results: Mapping[str, Any]) -> str:
    """Markdown: throughput and latency per system, the ratios against the goals, the open loop."""
    settings = results["settings"]
    systems = results["systems"]
    lines = [
        f"Commit {results.get('commit') or 'unknown'}. "
        f"Closed loop, {settings['connections']} connections, {settings['seconds']:g} s after a "
        f"{settings['warmup']:g} s warm-up, distinct users over {settings['items']:,} items, "
        f"{settings['client']} client. Pinning: {results['pinning']['description']}.",
        "",
        "| system | likes/s | latency (closed loop) | errors | CPU cores used | bound by |",
        "|---|---|---|---|---|---|",
    ]
    for name, system in systems.items():
        closed = system["closed"]
        lines.append(
            f"| {NAMES.get(name, name)} | {closed['achieved_rate']:,.0f} | {_latency(closed)} | "
            f"{_errors(closed)} | {_cpu(closed)} | {closed['bound_by']} |"
        )
    ratios, met = results["ratios"], results["met"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    opened = systems["ours"]["open"]
    lines += [
        "",
        "| measure | result | vs goal |",
        "|---|---|---|",
        f"| ours / no-op like throughput | {ratios['vs_noop']:.2f}x | >= 0.8x: {verdict(met['vs_noop'])} |",
        f"| ours / usual design (Redis + queue + MySQL) | {ratios['vs_usual']:.2f}x | "
        f">= 1.7x: {verdict(met['vs_usual'])} |",
        f"| ours / one MySQL transaction per like | {ratios['vs_mysql']:.2f}x | |",
        f"| ours at {opened['offered_rate']:,.0f} likes/s offered for {opened['seconds']:g} s (open loop, "
        f"latency from intended send time; achieved {opened['achieved_rate']:,.0f}/s) | {_latency(opened)}; "
        f"errors {_errors(opened)} | p99 <= 25 ms, 0 errors: {verdict(met['open_p99_ms'])} |",
    ]
    ours = systems["ours"]
    per_fsync = ours.get("likes_per_fsync")
    lines.append(
        f"| ours: stored = acknowledged; likes per fsync | "
        f"{'exact' if ours['exact'] else '**NOT exact**'} ({ours['stored']:,} likes); "
        f"{'n/a' if per_fsync is None else f'{per_fsync:.1f}'} | |"
    )
    usual = systems.get("redis_queue", {})
    if "mysql_drain_s" in usual:
        lines.append(
            f"| usual design: MySQL backlog when the load ended, time to drain, rows = acknowledged | "
            f"{usual['backlog_at_end']:,} rows, {usual['mysql_drain_s']:.2f} s; "
            f"{'exact' if usual['exact'] else '**NOT exact**'} ({usual['mysql_rows']:,} rows) | |"
        )
    sql = systems.get("mysql_upsert", {})
    if "stored" in sql:
        lines.append(
            f"| per-like MySQL: rows and counters = acknowledged | "
            f"{'exact' if sql['exact'] else '**NOT exact**'} ({sql['mysql_rows']:,} rows) | |"
        )
    stores = results.get("stores", {})
    if stores:
        lines += [
            "",
            "Stores as configured on this machine: Redis appendonly="
            f"{stores.get('redis_appendonly')} (appendfsync {stores.get('redis_appendfsync')}), "
            f"save='{stores.get('redis_save')}'; MySQL innodb_flush_log_at_trx_commit="
            f"{stores.get('mysql_innodb_flush_log_at_trx_commit')}, "
            f"sync_binlog={stores.get('mysql_sync_binlog')}. "
            "Ours answers after its fsync; the usual design answers before anything is on disk.",
        ]
    if results.get("quick"):
        lines += ["", "Quick mode: smoke sizes, not the product's figures."]
    return "\n".join(lines)


def all_met(results: Mapping[str, Any]) -> bool:
    return all(results["met"].values())
