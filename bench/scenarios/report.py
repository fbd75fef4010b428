"""The scenarios' report: a markdown table and a chart of every result of one kind (quick or full)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.scenarios.spec import ALL


def load_results(out: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """Every scenario result in ``out`` of the same kind (quick or full), in the order of ``ALL``."""
    found: dict[str, dict[str, Any]] = {}
    for name in ALL:
        path = out / f"scenario-{name}.json"
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                result = json.loads(path.read_text())
                if result.get("quick") == quick:
                    found[name] = result
    return found


def refresh_reports(out: Path, quick: bool) -> None:
    """Rewrite ``scenarios.md`` and ``scenarios.png`` from every result in ``out`` of this kind."""
    results = load_results(out, quick)
    if not results:
        return
    (out / "scenarios.md").write_text(render(results) + "\n")
    from bench import charts  # matplotlib loads only when a chart is drawn

    charts.scenario_chart(results, out / "scenarios.png")


def all_met(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether every goal of every scenario (one result or several by name) was met."""
    scenarios = [results] if "scenario" in results else list(results.values())
    return all(all(r["met"].values()) for r in scenarios)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _exact(result: Mapping[str, Any]) -> str:
    exact = result["exactness"]
    nodes = "nodes exact" if exact["exact"] else "**nodes NOT exact**"
    parts = [f"{nodes} after {_seconds(exact['exact_after_s'])} ({exact['expected_total']:,} likes)"]
    sinks = exact.get("sinks")
    if sinks:
        for name in ("redis", "mysql"):
            state = "exact" if sinks[name]["exact"] else "**NOT exact**"
            parts.append(f"{name} {state} after {_seconds(sinks[name]['after_s'])}")
    if exact["uncertain_ops"]:
        parts.append(f"{exact['uncertain_ops']:,} ops of unknown fate")
    return "; ".join(parts)


def _gossip(result: Mapping[str, Any]) -> str:
    gossip = result["gossip"]
    if gossip["bytes_per_like"] is None:
        return "n/a"
    return f"{gossip['bytes_per_like']:,.1f} ({gossip['bytes_per_like_per_peer']:,.1f} per peer)"


def _memory(result: Mapping[str, Any]) -> str:
    memory = result["memory"]
    growth = [n["growth"] for n in memory["nodes"].values() if n["growth"] is not None]
    after = [n["rss_after"] for n in memory["nodes"].values() if n["rss_after"] is not None]
    if not after:
        return "n/a"
    per_like = memory["max_bytes_per_held_like"]
    text = f"{max(after) / 2**20:,.0f} MiB max (+{max(growth) / 2**20:,.1f})"
    if per_like is not None:
        text += f"; {per_like:,.0f} B/held like"
    return text


def render(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: a row per scenario (load, throughput, latency, errors, exactness, gossip, memory, goals)."""
    first = next(iter(results.values()))
    lines = [
        f"Commit {first.get('commit') or 'unknown'}; {first['host']['cpus']} CPUs. Nodes and load generator "
        "share the machine; latency runs from each request's intended send time (open loop) or send time "
        "(closed loop).",
        "",
        "| scenario | load | throughput | latency p50 / p99 / p99.9 / max (ms) | errors | exactness "
        "| converged | gossip B/like | RSS per node | goals |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        lat = result["latency"]
        load = result["load"]
        tp = result["throughput"]
        errors = ", ".join(f"{k}: {v:,}" for k, v in sorted(result["errors"].items())) or "0"
        if load["unchanged"]:
            errors += f"; unchanged: {load['unchanged']:,}"
        goals = ", ".join(f"{goal} {'met' if ok else '**missed**'}" for goal, ok in result["met"].items())
        rate = f"{tp['ops_per_s']:,.0f} {tp['ops']}/s"
        if result["config"]["per_request"] > 1:
            rate += f" ({tp['requests_per_s']:,.0f} requests/s)"
        offered = load.get("offered_rate")
        how = f"open {offered:,.0f}/s" if offered else "closed loop"
        lines.append(
            f"| {name} | {result['config']['description']}; {how}, {load['elapsed_s']:.1f} s | {rate} | "
            f"{_ms(lat['p50_ms'])} / {_ms(lat['p99_ms'])} / {_ms(lat['p99_9_ms'])} / {_ms(lat['max_ms'])} | "
            f"{errors} | {_exact(result)} | {_seconds(result['exactness']['converge_s'])} | "
            f"{_gossip(result)} | {_memory(result)} | {goals} |"
        )
    if first.get("quick"):
        lines += ["", "Quick mode: smoke sizes, not the product's figures."]
    return "\n".join(lines)
