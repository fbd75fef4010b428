"""The long tail: what a node pays per item when most items are liked once (``python -m bench longtail``).

Issue 19: a real catalogue is mostly items with one like, so the cost that matters is per item, not
per like. One node of a ``NodeProcesses`` cluster on the shipped ``cluster.yaml`` (SQLite
checkpoints on) is loaded through ``POST /v1/batch``, 1,000 ops a request from ``CLIENTS`` threads
(each its own keep-alive connection), with N likes, each a new item and a new user. Then:

- **memory per item**: the node's RSS growth (``/proc/<pid>/status`` VmRSS; RssAnon, its anonymous
  part, reported apart because file pages of the interpreter and libraries are not per item; VmHWM
  for the peak) over the fresh node, divided by N: right after the load, once the checkpoints have
  drained (the steady state, judged), and after the restart below (when healthy, and once its own
  start-up checkpoints have run, judged too: a restarted node must hold the items as cheaply);
- **ingest**: likes/s over the load's wall time;
- **restart to healthy**: SIGTERM (the launcher's ``stop``) until the node has stopped, then start
  again until ``/healthz`` answers and every one of ``SAMPLE`` random loaded items counts 1 (``POST
  /v1/counts``): judged on both together, what an operator's restart takes. A node serves before it
  has read a big item store whole (an item not read yet is read first when asked for), so the time
  until ``/readyz`` answers 200 (everything read in) is reported beside it, and the totals are read
  then;
- **disk per item**: the data directory's allocated bytes (as ``du``), after the load has drained.

Beside the node, **in-process** (seconds, always): a ``LikeStore`` fed the same items through
``apply_likes`` 1,000 at a time, its log journal, gossip deltas and dirty set drained and every item
digested as a node does; tracemalloc's bytes per item by allocation site (the keys are made inside the
traced region, as a request parser makes them), and untraced, items applied per second and items
restored per second from their states (what a start reads from the item store).

Counts are checked exact throughout (every op acknowledged as a change, the node's item and like
totals, the sampled counts before and after the restart); an inexact run misses its goals.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import random
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import CpuSample, host_info, percentile, source_commit, write_json
from bench.launch import ClusterError, NodeProcesses, get_json, serves

#: Issue 19's goals: RSS growth per item, likes/s ingested, seconds from restart to healthy.
GOAL_BYTES_PER_ITEM = 150.0
GOAL_LIKES_PER_SECOND = 50_000.0
GOAL_RESTART_SECONDS = 10.0
#: Items of a ``--quick`` run (a smoke run: its figures are not the product's).
QUICK_ITEMS = 20_000
#: Ops per ``POST /v1/batch`` (the shipped ``api.max_batch_ops``).
BATCH_OPS = 1000
#: Client threads of the load, each with its own connection: enough to keep a node's group commit
#: fed while one request is in flight, few enough to leave the node its core.
CLIENTS = 2
#: Items whose counts are read back (the shipped ``api.max_count_items``: one request).
SAMPLE = 1000
CONTENT_TYPE = "post"
#: First item and first user id: 40-bit ids, the width of real ones (a Python int of 32 bytes).
ITEM_BASE = 10**12
USER_BASE = 2 * 10**12
NAME = "n1"
#: Seconds one HTTP request of the load may take.
REQUEST_TIMEOUT = 60.0
#: Seconds the checkpoints may take to drain, at least, and per item beyond that.
DRAIN_TIMEOUT = 60.0
DRAIN_SECONDS_PER_ITEM = 1e-4
#: Seconds a restarted node may take to serve the sampled counts before the run fails: far past the
#: goal, so a slow restart is reported as missed rather than aborted.
RESTART_TIMEOUT = 300.0
#: Seconds a node may take to stop after SIGTERM (it writes a final snapshot) before it is killed.
STOP_TIMEOUT = 120.0
#: Seconds, from a node's first answer, by which it has begun rewriting in full every item it owns:
#: it does so ``node.checkpoint.checkpointer.TAKEOVER_DELAY`` (5 s) after its first checkpoint round
#: (as it starts serving), at a round (every ``checkpoint.interval_ms``, 1 s shipped). Memory is read
#: once that rewrite has drained too (every sink has written N items since the start), not during it.
TAKEOVER_SECONDS = 5.0 + 2 * 1.0
#: Seconds waited once drained before memory is read: a node returns freed memory to the OS every
#: 5 s (``node.process.heap.TRIM_INTERVAL``), so this sees one trim at least. Quick runs wait 1 s.
SETTLE_SECONDS = 6.0
POLL_INTERVAL = 0.05
#: Seconds a ``GET /v1/cluster`` may take: its fingerprint first digests every item changed since the
#: last read (a million after the load), in slices between other requests.
STATUS_TIMEOUT = 120.0
#: The ``/proc/<pid>/status`` fields read, in kB there, in bytes here.
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


# -- the node's process and disk ------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """The ``STATUS_FIELDS`` of ``/proc/<pid>/status`` in bytes, read at once (empty where unreadable)."""
    found: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        field, _, value = line.partition(":")
        if field in STATUS_FIELDS:
            try:
                found[field] = int(value.split()[0]) * 1024
            except (ValueError, IndexError):
                continue
    return found


def disk_usage(path: Path) -> dict[str, Any]:
    """Allocated bytes under ``path`` (as ``du``: blocks, not lengths), apparent bytes, and the
    allocation per file, largest first: which of log, snapshot and checkpoint file costs what."""
    files: dict[str, int] = {}
    apparent = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:  # a log segment removed by a snapshot meanwhile
                continue
            files[os.path.relpath(os.path.join(folder, name), path)] = stat.st_blocks * 512
            apparent += stat.st_size
    ordered = dict(sorted(files.items(), key=lambda kv: -kv[1]))
    return {"allocated": sum(files.values()), "apparent": apparent, "files": ordered}


def memory_figures(status: dict[str, int], base: dict[str, int], items: int) -> dict[str, Any]:
    """One reading of the node's memory, with its growth per item over the fresh node ``base``."""

    def per_item(field: str, over: str) -> float | None:
        if field not in status or over not in base:
            return None
        return (status[field] - base[over]) / items

    return {
        "rss": status.get("VmRSS"),
        "rss_anon": status.get("RssAnon"),
        "rss_file": status.get("RssFile"),
        "hwm": status.get("VmHWM"),
        "rss_per_item": per_item("VmRSS", "VmRSS"),
        "anon_per_item": per_item("RssAnon", "RssAnon"),
        # The peak over the fresh node's RSS, as ``bench.memory`` reports it.
        "hwm_per_item": per_item("VmHWM", "VmRSS"),
    }


# -- HTTP ------------------------------------------------------------------------------------------------


def connect(url: str, timeout: float = REQUEST_TIMEOUT) -> http.client.HTTPConnection:
    """A keep-alive connection to the node at ``url`` (http.client: no proxy from the environment)."""
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def post_json(url: str, path: str, body: bytes, timeout: float = 5.0) -> tuple[int, Any]:
    """``POST path`` with a JSON body on a fresh connection: (status, the answer parsed or None)."""
    connection = connect(url, timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


def sample_counts(url: str, ids: Sequence[int]) -> list[int] | None:
    """The counts of items ``ids`` (one ``POST /v1/counts``); None while the node cannot answer."""
    body = json.dumps({"items": [{"type": CONTENT_TYPE, "id": i} for i in ids]}).encode()
    try:
        status, answer = post_json(url, "/v1/counts", body)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200 or not isinstance(answer, dict):
        return None
    counts = answer.get("counts")
    return [int(c) for c in counts] if isinstance(counts, list) else None


def batch_body(first: int, end: int) -> bytes:
    """The likes of items ``first..end-1``: item ``i`` is liked by its own user, both new."""
    return b'{"ops":[%s]}' % b",".join(
        b'{"op":"like","type":"post","id":%d,"user":%d}' % (ITEM_BASE + i, USER_BASE + i)
        for i in range(first, end)
    )


class Loader:
    """The load: ``CLIENTS`` threads, thread ``k`` posting blocks ``k``, ``k + CLIENTS``, ... of
    ``BATCH_OPS`` items; each answer is checked (every op a change), and each request timed."""

    def __init__(self, url: str, items: int) -> None:
        self.url = url
        self.items = items
        self.errors: list[str] = []
        self.changed = 0
        self.requests = 0
        self.latencies: list[float] = []
        self._lock = threading.Lock()

    def run(self) -> float:
        """Load every item; the wall time in seconds. RuntimeError naming the first failures."""
        threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            # Bounded: every request is (REQUEST_TIMEOUT); the join waits for all of them at most.
            thread.join(REQUEST_TIMEOUT * (self.items // BATCH_OPS + 2))
        elapsed = time.perf_counter() - started
        if any(thread.is_alive() for thread in threads):
            self.errors.append("a load thread did not finish")
        if self.errors:
            raise RuntimeError("; ".join(self.errors[:3]))
        return elapsed

    def _client(self, index: int) -> None:
        connection = connect(self.url)
        try:
            for first in range(index * BATCH_OPS, self.items, CLIENTS * BATCH_OPS):
                if self.errors:
                    return
                end = min(first + BATCH_OPS, self.items)
                self._post(connection, first, end)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def _post(self, connection: http.client.HTTPConnection, first: int, end: int) -> None:
        body = batch_body(first, end)
        sent = time.perf_counter()
        connection.request("POST", "/v1/batch", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        took = time.perf_counter() - sent
        if response.status != 200:
            with self._lock:
                self.errors.append(f"POST /v1/batch: HTTP {response.status}: {raw[:200]!r}")
            return
        results = json.loads(raw)["results"]
        changed = sum(1 for result in results if result.get("changed") is True)
        with self._lock:
            self.requests += 1
            self.changed += changed
            self.latencies.append(took)
            if len(results) != end - first:
                self.errors.append(f"POST /v1/batch: {len(results)} results for {end - first} ops")


# -- the run ---------------------------------------------------------------------------------------------


def poll(check: Callable[[], bool], timeout: float, interval: float = POLL_INTERVAL) -> float | None:
    """Call ``check`` until it holds: the seconds that took, or None after ``timeout`` (bounded in
    count as well as in time)."""
    started = time.perf_counter()
    for _ in range(int(timeout / interval) + 2):
        if check():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(interval)
    return None


def drained(url: str, written: int = 0) -> bool:
    """Whether every checkpoint sink of the node holds every change (no item pending), having written
    at least ``written`` items since the node started."""
    try:
        lanes = get_json(f"{url}/v1/cluster", timeout=STATUS_TIMEOUT).get("checkpoint", {})
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return all(
        lane.get("pending_items") == 0 and int(lane.get("written_items") or 0) >= written
        for lane in lanes.values()
    )


def ready(url: str) -> bool:
    """Whether the node answers ``/readyz`` 200: its item store read in whole, its log taking writes."""
    connection = connect(url, STATUS_TIMEOUT)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def totals(url: str) -> tuple[int, int]:
    """The node's item and like totals (``GET /v1/cluster``)."""
    view = get_json(f"{url}/v1/cluster", timeout=STATUS_TIMEOUT)
    return int(view["items"]), int(view["likes"])


def node_pid(nodes: NodeProcesses) -> int:
    """The node's pid as it reports it (the process started, should it not say)."""
    view = get_json(f"{nodes.urls[NAME]}/v1/cluster", timeout=STATUS_TIMEOUT)
    return int(view["node"].get("pid") or nodes.processes[NAME].pid)


def measure(nodes: NodeProcesses, items: int, settle: float) -> dict[str, Any]:
    """Load, drain, restart and read the node of ``nodes`` (see the module); every wait bounded."""
    url = nodes.urls[NAME]
    sample = sorted(random.Random(19).sample(range(items), min(SAMPLE, items)))
    sample_ids = [ITEM_BASE + i for i in sample]
    drain_timeout = DRAIN_TIMEOUT + items * DRAIN_SECONDS_PER_ITEM

    nodes.start_all()
    serving = time.perf_counter()
    pid = node_pid(nodes)
    fresh = sample_counts(url, sample_ids)  # also the first request a node answers, before the base
    base = proc_status(pid)

    cpu = CpuSample.take({"node": pid, "bench": os.getpid()})
    loader = Loader(url, items)
    load_seconds = loader.run()
    usage = cpu.usage_since()
    loaded = memory_figures(proc_status(pid), base, items)
    disk_loaded = disk_usage(nodes.data_dir(NAME))
    items_loaded, likes_loaded = totals(url)
    counts_loaded = sample_counts(url, sample_ids)

    time.sleep(max(0.0, TAKEOVER_SECONDS - (time.perf_counter() - serving)))
    drain_seconds = poll(lambda: drained(url, items), drain_timeout, 0.25)
    time.sleep(settle)
    settled = memory_figures(proc_status(pid), base, items)
    disk_drained = disk_usage(nodes.data_dir(NAME))

    stopping = time.perf_counter()
    stop_status = nodes.stop(NAME)
    stop_seconds = time.perf_counter() - stopping
    disk_stopped = disk_usage(nodes.data_dir(NAME))

    spawned = time.perf_counter()
    process = nodes.spawn(NAME)
    healthy_at: float | None = None
    counts_restarted: list[int] | None = None
    for _ in range(int(RESTART_TIMEOUT / POLL_INTERVAL) + 2):
        if process.poll() is not None:
            raise ClusterError(f"{NAME} exited with status {process.returncode}:\n{nodes.log_tail(NAME)}")
        if healthy_at is None and serves(url):
            healthy_at = time.perf_counter()
        if healthy_at is not None:
            counts_restarted = sample_counts(url, sample_ids)
            if counts_restarted is not None and all(c == 1 for c in counts_restarted):
                break
        if time.perf_counter() - spawned > RESTART_TIMEOUT:
            break
        time.sleep(POLL_INTERVAL)
    if counts_restarted is None or not all(c == 1 for c in counts_restarted):
        seen = "no counts" if counts_restarted is None else f"{counts_restarted.count(1)} sampled counts of 1"
        raise ClusterError(
            f"{NAME} did not serve the sampled counts within {RESTART_TIMEOUT:.0f} s of its start "
            f"({seen}):\n{nodes.log_tail(NAME)}"
        )
    restart_seconds = time.perf_counter() - spawned
    pid = node_pid(nodes)
    restarted = memory_figures(proc_status(pid), base, items)
    # A big item store is read in while the node serves: the totals are whole once it is ready.
    ready_after = poll(lambda: ready(url), RESTART_TIMEOUT)
    ready_seconds = None if ready_after is None else time.perf_counter() - spawned
    items_restarted, likes_restarted = totals(url)
    # The restarted node's steady state: once its start-up checkpoints (the full rewrite of every
    # item it owns) have run and drained, and a trim.
    time.sleep(max(0.0, TAKEOVER_SECONDS - (time.perf_counter() - (healthy_at or spawned))))
    restart_drain_seconds = poll(lambda: drained(url, items), drain_timeout, 0.25)
    time.sleep(settle)
    restart_settled = memory_figures(proc_status(pid), base, items)
    restart_lanes = get_json(f"{url}/v1/cluster", timeout=STATUS_TIMEOUT).get("checkpoint", {})

    latencies = loader.latencies
    return {
        "load": {
            "seconds": round(load_seconds, 3),
            "likes_per_second": items / load_seconds,
            "requests": loader.requests,
            "batch_p50_ms": percentile(latencies, 50) * 1000,
            "batch_p99_ms": percentile(latencies, 99) * 1000,
            "cpu": usage,
        },
        "memory": {
            "fresh": memory_figures(base, base, items),
            "loaded": loaded,
            "drained": settled,
            "restart_healthy": restarted,
            "restart_drained": restart_settled,
        },
        "drain_seconds": None if drain_seconds is None else round(drain_seconds, 2),
        "restart": {
            "stop_seconds": round(stop_seconds, 2),
            "stop_status": stop_status,
            "healthz_seconds": None if healthy_at is None else round(healthy_at - spawned, 3),
            "seconds": round(restart_seconds, 3),
            "ready_seconds": None if ready_seconds is None else round(ready_seconds, 3),
            "drain_seconds": None if restart_drain_seconds is None else round(restart_drain_seconds, 2),
            "checkpoint_written_items": {
                name: lane.get("written_items") for name, lane in restart_lanes.items()
            },
        },
        "disk": {
            "loaded": disk_loaded,
            "drained": disk_drained,
            "stopped": disk_stopped,
            "bytes_per_item": disk_drained["allocated"] / items,
        },
        "exact": {
            "fresh_sample_all_0": fresh is not None and all(c == 0 for c in fresh),
            "acknowledged_changes": loader.changed == items,
            "items_after_load": items_loaded == items,
            "likes_after_load": likes_loaded == items,
            "sample_after_load_all_1": counts_loaded is not None and all(c == 1 for c in counts_loaded),
            "items_after_restart": items_restarted == items,
            "likes_after_restart": likes_restarted == items,
            "sample_after_restart_all_1": counts_restarted is not None
            and all(c == 1 for c in counts_restarted),
        },
    }


def in_process(items: int) -> dict[str, Any]:
    """Traced bytes per item of a store holding ``items`` single-like items, and untraced apply and
    restore rates (see the module)."""
    from node.state.item import ItemKey
    from node.state.store import LikeStore

    def fill(store: LikeStore) -> None:
        for start in range(0, items, BATCH_OPS):
            end = min(start + BATCH_OPS, items)
            keys = [ItemKey(CONTENT_TYPE, ITEM_BASE + i).to_bytes() for i in range(start, end)]
            users = [USER_BASE + i for i in range(start, end)]
            store.apply_likes(keys, users, [True] * len(keys))
            store.drain_journal()
            store.drain_deltas()
            store.drain_dirty()
        for raw in store.drain_changed():
            store.digest(raw)

    gc.collect()
    tracemalloc.start()
    try:
        traced = LikeStore("n1")
        fill(traced)
        gc.collect()
        total = tracemalloc.get_traced_memory()[0]
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    by_site: dict[str, int] = {}

    def by_size(entry: tuple[str, int]) -> int:
        return -entry[1]

    for stat in snapshot.statistics("filename"):
        name = stat.traceback[0].filename
        site = "crdt" if "/crdt/" in name else Path(name).name
        by_site[site] = by_site.get(site, 0) + stat.size
    del traced, snapshot
    started = time.perf_counter()
    store = LikeStore("n1")
    fill(store)
    applied = time.perf_counter() - started
    states = [(raw, store.state(raw)) for raw in store.item_keys()]
    started = time.perf_counter()
    restored = LikeStore("n1")
    damaged = restored.restore((raw, state) for raw, state in states if state is not None)
    restoring = time.perf_counter() - started
    return {
        "items": items,
        "bytes_per_item": total / items,
        "by_allocation_site": {site: size / items for site, size in sorted(by_site.items(), key=by_size)},
        "applied_per_second": items / applied,
        "restored_per_second": items / restoring,
        "exact": len(store) == len(restored) == items and restored.likes == items and not damaged,
    }


def run(*, items: int = 1_000_000, quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    """One long-tail run on a fresh node in a temporary directory; written to ``out/longtail.json``."""
    if quick:
        items = min(items, QUICK_ITEMS)
    if items < 1:
        raise ValueError("the long tail needs at least one item")
    settle = 1.0 if quick else SETTLE_SECONDS
    host = host_info()
    with tempfile.TemporaryDirectory(prefix="likes-longtail-") as root:
        nodes = NodeProcesses(Path(root), (NAME,), stop_timeout=STOP_TIMEOUT)
        try:
            measured = measure(nodes, items, settle)
        finally:
            nodes.stop_all()
    measured["in_process"] = in_process(items)
    measured["exact"]["in_process"] = measured["in_process"]["exact"]
    memory = measured["memory"]
    worst = [memory[when]["rss_per_item"] for when in ("drained", "restart_drained")]
    results: dict[str, Any] = {
        "items": items,
        "quick": quick,
        "batch_ops": BATCH_OPS,
        "clients": CLIENTS,
        "sample": min(SAMPLE, items),
        "settle_seconds": settle,
        "goals": {
            "bytes_per_item": GOAL_BYTES_PER_ITEM,
            "likes_per_second": GOAL_LIKES_PER_SECOND,
            "restart_seconds": GOAL_RESTART_SECONDS,
        },
        "commit": source_commit(),
        "host": host,
        **measured,
    }
    results["met"] = {
        # Read before the checkpoints drained, a figure is not the steady state: not met.
        "memory": measured["drain_seconds"] is not None
        and measured["restart"]["drain_seconds"] is not None
        and all(value is not None and value <= GOAL_BYTES_PER_ITEM for value in worst),
        "ingest": measured["load"]["likes_per_second"] >= GOAL_LIKES_PER_SECOND,
        # An operator's restart: the stop (its final snapshot) and the start until healthy.
        "restart": measured["restart"]["stop_seconds"] + measured["restart"]["seconds"]
        <= GOAL_RESTART_SECONDS,
        "exact": all(measured["exact"].values()),
    }
    write_json(out, "longtail.json", results)
    return results


def all_met(results: dict[str, Any]) -> bool:
    """Whether every goal was met (memory, ingest, restart, exact counts)."""
    return all(results["met"].values())


def render(results: dict[str, Any]) -> str:
    """A markdown table: figure, value, goal, met."""
    goals, met, memory = results["goals"], results["met"], results["memory"]
    per_item = f"{results['items']:,} items"

    def b(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} B"

    def yes(flag: bool) -> str:
        return "yes" if flag else "**no**"

    def mem(when: str) -> str:
        reading = memory[when]
        return f"{b(reading['rss_per_item'])} (anon {b(reading['anon_per_item'])})"

    def fits(when: str) -> str:
        value = memory[when]["rss_per_item"]
        return yes(value is not None and value <= goals["bytes_per_item"])

    load, restart, disk = results["load"], results["restart"], results["disk"]
    node_cores = load["cpu"]["cores"].get("node")
    share = load["cpu"]["machine_busy_share"]
    cores = "" if node_cores is None else f"; node used {node_cores:.2f} cores"
    cores += "" if share is None else f", machine {share:.0%} busy"
    stop = "" if restart["stop_status"] == 0 else f", stop status {restart['stop_status']}"
    memory_goal = f"<= {goals['bytes_per_item']:.0f} B"
    inside = results["in_process"]
    ready_seconds = restart.get("ready_seconds")
    ready_text = "n/a" if ready_seconds is None else f"{restart['stop_seconds'] + ready_seconds:.2f} s"
    sites = ", ".join(f"{site} {size:.0f}" for site, size in list(inside["by_allocation_site"].items())[:5])
    lines = [
        f"Long tail, one node, {per_item} liked once each (a new item and user per like), "
        f"POST /v1/batch of {results['batch_ops']:,} ops from {results['clients']} clients",
        "",
        "| figure | value | goal | met |",
        "|---|---|---|---|",
        f"| RSS growth per item, right after the load | {mem('loaded')} | | |",
        f"| RSS growth per item, checkpoints drained (+{results['settle_seconds']:.0f} s) "
        f"| {mem('drained')} | {memory_goal} | {fits('drained')} |",
        f"| peak (VmHWM) over the fresh node, per item | {b(memory['drained']['hwm_per_item'])} | | |",
        f"| ingest (load wall time {load['seconds']:.1f} s; batch p50 {load['batch_p50_ms']:.0f} ms, "
        f"p99 {load['batch_p99_ms']:.0f} ms{cores}) | {load['likes_per_second']:,.0f} likes/s "
        f"| >= {goals['likes_per_second']:,.0f} | {yes(met['ingest'])} |",
        f"| restart to healthy: SIGTERM until stopped ({restart['stop_seconds']:.2f} s{stop}), then start "
        f"until /healthz 200 (at {restart['healthz_seconds']} s) and {results['sample']:,} sampled counts "
        f"all 1 ({restart['seconds']:.2f} s) | {restart['stop_seconds'] + restart['seconds']:.2f} s "
        f"| <= {goals['restart_seconds']:.0f} s | {yes(met['restart'])} |",
        f"| restart until /readyz 200 (the item store read in whole) | {ready_text} | | |",
        f"| RSS growth per item after restart, when healthy | {mem('restart_healthy')} | | |",
        f"| RSS growth per item after restart, its checkpoints drained | {mem('restart_drained')} "
        f"| {memory_goal} | {fits('restart_drained')} |",
        f"| data dir on disk per item, drained (du; {disk['drained']['allocated'] / 2**20:,.1f} MiB) "
        f"| {disk['bytes_per_item']:.1f} B | | |",
        f"| in-process: traced bytes per item of a store ({sites}) | {b(inside['bytes_per_item'])} | | |",
        f"| in-process: items applied, and restored from their states | "
        f"{inside['applied_per_second']:,.0f}/s, {inside['restored_per_second']:,.0f}/s | | |",
        f"| counts exact (acknowledged, totals, samples before and after restart, in-process) | "
        f"{'yes' if met['exact'] else 'no: ' + ', '.join(k for k, v in results['exact'].items() if not v)} "
        f"| exact | {yes(met['exact'])} |",
    ]
    verdict = "met" if all_met(results) else "missed"
    lines.append(f"\ngoals (issue 19): {verdict}")
    return "\n".join(lines)
