"""The fault runs' figures as a markdown table, and whether every goal was met."""

from __future__ import annotations

from typing import Any


def render(results: list[dict[str, Any]]) -> str:
    """A markdown table of the figures."""
    lines = [
        "| nemesis | nodes | fault s | operations | acknowledged | indeterminate | lost | phantom "
        "| count != set | converge s | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "not_run" in r:
            lines.append(f"| {r['nemesis']} | not run: {r['not_run']} |" + " |" * 9)
            continue
        notes = []
        if "disk_cycles" in r:
            notes.append(
                f"refused {r['refused']} (visible after: {r['refused_visible']}); "
                + ", ".join(
                    f"{c['kind']} {c['fault_s']} s: writes again after {c['writes_again_s']} s, "
                    f"/readyz {c['readyz_while_faulty']} then 200 after {c['ready_again_s']} s"
                    for c in r["disk_cycles"]
                )
            )
        if "false_dead_verdicts" in r:
            notes.append(f"false dead verdicts {r['false_dead_verdicts']} in {len(r['pauses'])} pauses")
        if "kill_detection_all_s_max" in r:
            notes.append(
                f"kill detected by all in <= {r['kill_detection_all_s_max']} s ({len(r['kills'])} kills)"
            )
        if "frames" in r:
            f = r["frames"]
            notes.append(
                f"frames {f.get('frames', 0)}: dropped {f.get('dropped', 0)}, "
                f"duplicated {f.get('duplicated', 0)}, reordered {f.get('reordered', 0)}, "
                f"replayed {f.get('replayed', 0)}"
            )
        if "partitions" in r:
            notes.append("partitions " + ", ".join(f"{k} {v}" for k, v in sorted(r["partitions"].items())))
        if "sinks_equal_s" in r:
            notes.append(
                f"outage {r['outage_s']} s; Redis/MySQL equal {r['sinks_equal_s']} s after heal, "
                f"duplicate records {r['mysql_duplicate_records']}"
            )
        lines.append(
            f"| {r['nemesis']} | {r['nodes']} | {r['fault_s']} | {r['operations']} | {r['acknowledged']} "
            f"| {r['indeterminate']} | {r['lost']} | {r['phantom']} | {r['count_mismatches']} "
            f"| {r['converge_s']} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def all_met(results: list[dict[str, Any]]) -> bool:
    return all(all(r["met"].values()) for r in results)
