"""The comparison as one record (ratios, goals, everything measured) and as markdown."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bench.common import source_commit
from bench.compare.measure import Settings
from bench.compare.placement import Placement
from bench.servers import Stores

GOALS: dict[str, float] = {"vs_noop": 0.8, "vs_usual": 1.7, "open_p99_ms": 25.0}


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
