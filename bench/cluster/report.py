"""The cluster measurements' goals, their markdown table, and whether every goal was met."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GOALS: dict[str, float] = {
    "propagation_p50_ms": 30.0,
    "propagation_p99_ms": 150.0,
    "anti_entropy_bytes": 64 * 1024,
    "gossip_bytes_per_like_per_peer": 40.0,
}


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
