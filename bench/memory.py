"""Memory per held like: what one hot post of N likes costs a node (``python -m bench memory``).

Two measurements, both of N distinct users' likes of one post (issue 5's goal: 150 B per held like):

- **in-process** (always; seconds): a ``LikeStore`` fed the way a node of a ``writers``-node cluster is
  fed, one like in ``writers`` written locally (``LikeStore.like``) and the others joined from the
  peers' gossip deltas (``LikeStore.merge``, 300 likes a delta), with the log journal, the gossip
  deltas and the checkpointer's dirty set drained as a node drains them. ``tracemalloc`` counts what
  the store holds at the end, split into the liker set (``crdt/``) and the rest (the reverse index,
  the store's own tables). The peers' deltas are encoded before tracing starts, so only what the
  store keeps of them counts; user ids are made inside the traced region, as a request parser makes
  them.
- **cluster** (``--nodes N``; a minute or two): a real ``LocalCluster`` on the shipped
  ``cluster.yaml`` (SQLite checkpoints on), loaded through ``POST /v1/batch`` (1,000 likes a
  request, one client thread per node, users spread over every node), then, once every node counts
  them all and the checkpoints have run, each node's RSS growth (``/proc/<pid>/status`` VmRSS) and
  peak (VmHWM) per held like.
"""

from __future__ import annotations

import gc
import http.client
import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import rss_bytes
from bench.launch import LocalCluster, get_json

#: Issue 5's goal: node RSS growth per held like of a 1,000,000-like hot post.
GOAL_BYTES_PER_LIKE = 150.0
#: Likes per peer delta joined in-process (about one gossip interval of a busy peer).
DELTA_LIKES = 300
#: First user id: 40-bit ids, the width of real user ids (a 28-byte int up to 2**30, 32 above).
USER_BASE = 10**12
#: Seconds the cluster measurement waits, once every node counts every like, for checkpoints to run.
SETTLE_SECONDS = 8.0
#: Seconds every node may take to count every like after the load.
CONVERGE_TIMEOUT = 120.0


def _peer_deltas(likes: int, writers: int) -> list[tuple[bytes, bytes]]:
    """The gossip deltas of the ``writers - 1`` peers, in arrival order (encoded, before tracing)."""
    from node.state.item import ItemKey
    from node.state.store import LikeStore

    key = ItemKey("hot_post", 1)
    peers = [LikeStore(f"peer{i}") for i in range(1, writers)]
    deltas: list[tuple[bytes, bytes]] = []
    for start in range(0, likes, DELTA_LIKES * writers):
        for i in range(start, min(start + DELTA_LIKES * writers, likes)):
            if i % writers:
                peers[i % writers - 1].like(key, USER_BASE + i)
        for peer in peers:
            peer.drain_journal()
            peer.drain_dirty()
            deltas.extend(peer.drain_deltas())
    return deltas


def in_process(likes: int = 1_000_000, writers: int = 3) -> dict[str, Any]:
    """Traced bytes per held like of a store holding ``likes`` likes of one post (see the module)."""
    from node.state.item import ItemKey
    from node.state.store import LikeStore

    key = ItemKey("hot_post", 1)
    deltas = _peer_deltas(likes, writers)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        store = LikeStore("n1")
        d = 0
        for start in range(0, likes, DELTA_LIKES * writers):
            for i in range(start, min(start + DELTA_LIKES * writers, likes), writers):
                store.like(key, USER_BASE + i)
            while d < len(deltas) and d < (start // (DELTA_LIKES * writers) + 1) * (writers - 1):
                store.merge(*deltas[d])
                d += 1
            store.drain_journal()
            store.drain_deltas()
            store.drain_dirty()
        for raw, payload in deltas[d:]:
            store.merge(raw, payload)
        store.drain_dirty()
        gc.collect()
        total, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    held = store.count(key)
    by_file: dict[str, int] = {}
    for stat in snapshot.statistics("filename"):
        name = stat.traceback[0].filename
        part = "crdt" if "/crdt/" in name else Path(name).name
        by_file[part] = by_file.get(part, 0) + stat.size
    return {
        "likes": likes,
        "writers": writers,
        "held": held,
        "seconds": round(elapsed, 2),
        "bytes_per_like": total / held,
        "peak_bytes_per_like": peak / held,
        "by_allocation_site": {
            part: size / held for part, size in sorted(by_file.items(), key=lambda kv: -kv[1])
        },
    }


def _post_batches(url: str, users: range, batch: int, errors: list[str]) -> None:
    """POST ``users``' likes of the hot post to ``url`` in batches (keep-alive, one connection)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            body = b'{"ops":[%s]}' % b",".join(
                b'{"op":"like","type":"hot_post","id":1,"user":%d}' % user for user in chunk
            )
            connection.request("POST", "/v1/batch", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                errors.append(f"{url}: HTTP {response.status}: {answer[:200]!r}")
                return
    finally:
        connection.close()


def cluster(likes: int = 1_000_000, nodes: int = 1, batch: int = 1000) -> dict[str, Any]:
    """RSS growth and peak per held like of every node of a real cluster (see the module)."""
    with LocalCluster(nodes) as running:
        views = running.cluster_views()
        pids = {view["node"]["name"]: int(view["node"].get("pid") or 0) for view in views}
        before = {name: rss_bytes(pid) for name, pid in pids.items()}
        errors: list[str] = []
        started = time.monotonic()
        # Each thread posts whole batches of its stride: users i*batch.. of every nodes*batch block.
        threads = [
            threading.Thread(target=_post_node, args=(url, i, nodes, likes, batch, errors))
            for i, url in enumerate(running.urls)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        loaded = time.monotonic() - started
        if errors:
            raise RuntimeError("; ".join(errors[:3]))
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        counts: list[int] = []
        while time.monotonic() < deadline:
            counts = [get_json(f"{url}/v1/items/hot_post/1")["count"] for url in running.urls]
            if all(count == likes for count in counts):
                break
            time.sleep(0.5)
        converged = time.monotonic() - started - loaded
        time.sleep(SETTLE_SECONDS)
        peaks = {name: _status_kb(pid, "VmHWM:") for name, pid in pids.items()}
        after = {name: rss_bytes(pid) for name, pid in pids.items()}
    per_node: dict[str, dict[str, Any]] = {}
    for name in pids:
        start, end, peak = before.get(name), after.get(name), peaks.get(name)
        per_node[name] = {
            "rss_before": start,
            "rss_after": end,
            "rss_peak": peak,
            "bytes_per_like": None if start is None or end is None else (end - start) / likes,
            "peak_bytes_per_like": None if start is None or peak is None else (peak - start) / likes,
        }
    return {
        "likes": likes,
        "nodes": nodes,
        "load_seconds": round(loaded, 1),
        "converge_seconds": round(converged, 1),
        "counts": counts,
        "per_node": per_node,
    }


def _post_node(url: str, index: int, nodes: int, likes: int, batch: int, errors: list[str]) -> None:
    """Node ``index``'s share: every ``nodes``-th block of ``batch`` users."""
    for block in range(index * batch, likes, nodes * batch):
        _post_batches(url, range(USER_BASE + block, USER_BASE + min(block + batch, likes)), batch, errors)
        if errors:
            return


def _status_kb(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` field in bytes (None where unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run(
    *, likes: int = 1_000_000, nodes: int = 0, quick: bool = False, out: Path | None = None
) -> dict[str, Any]:
    """The in-process figure, and the cluster's when ``nodes`` > 0; written to ``out/memory.json``."""
    if quick:
        likes = min(likes, 20_000)
    results: dict[str, Any] = {"goal_bytes_per_like": GOAL_BYTES_PER_LIKE, "quick": quick}
    results["in_process"] = in_process(likes)
    if nodes:
        results["cluster"] = cluster(likes, nodes)
    worst = [results["in_process"]["bytes_per_like"]]
    if nodes:
        worst += [n["bytes_per_like"] for n in results["cluster"]["per_node"].values() if n["bytes_per_like"]]
    results["met"] = max(worst) <= GOAL_BYTES_PER_LIKE
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def render(results: dict[str, Any]) -> str:
    """A markdown table of the figures."""
    inner = results["in_process"]
    lines = [
        "| measure | bytes per held like |",
        "|---|---|",
        f"| in-process store, {inner['held']:,} likes from {inner['writers']} writers (tracemalloc) "
        f"| {inner['bytes_per_like']:.1f} (peak {inner['peak_bytes_per_like']:.1f}) |",
    ]
    for part, size in inner["by_allocation_site"].items():
        lines.append(f"| &nbsp; allocated in {part} | {size:.1f} |")
    if "cluster" in results:
        run_ = results["cluster"]
        for name, node in run_["per_node"].items():
            growth, peak = node["bytes_per_like"], node["peak_bytes_per_like"]
            shown = "n/a" if growth is None else f"{growth:.1f}"
            shown_peak = "n/a" if peak is None else f"{peak:.1f}"
            lines.append(
                f"| {name} of {run_['nodes']}: RSS growth, {run_['likes']:,} likes "
                f"(loaded in {run_['load_seconds']} s) | {shown} (peak {shown_peak}) |"
            )
    verdict = "met" if results["met"] else "missed"
    lines.append(f"\ngoal: {results['goal_bytes_per_like']:.0f} B per held like: {verdict}")
    return "\n".join(lines)
