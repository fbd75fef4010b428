"""PNG charts of benchmark results: throughput and latency per system (``compare``) or per scenario.

matplotlib with the Agg backend (no display needed, the same bytes in CI as on a laptop). Rates span
two orders of magnitude (batch ingestion against single likes) and latencies three, so both axes are
logarithmic; every bar carries its value so the chart reads without the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot loads: no display, the same PNG everywhere

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

#: Latency percentiles drawn, as (result key, legend label).
PERCENTILES = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9"), ("max_ms", "max"))


def _figure_value(value: Any) -> float:
    """A value a log axis can draw: missing or non-positive as a hair above zero."""
    return float(value) if isinstance(value, int | float) and value > 0 else 1e-3


def _plain(axes: Axes) -> None:
    """Log-axis ticks as plain numbers (2,000 rather than 2x10^3): the figures are read, not derived."""
    formatter = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    axes.yaxis.set_major_formatter(formatter)
    axes.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: formatter(value, None) if _leading_digit(value) in (2, 5) else "")
    )


def _leading_digit(value: float) -> int:
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def _commit(results: Mapping[str, Any]) -> str:
    """The commit, without the list of changed files a dirty tree adds (too long for a caption)."""
    commit = str(results.get("commit") or "unknown")
    return commit.split(":")[0]


def _bars(
    axes: Axes, labels: Sequence[str], values: Sequence[float], title: str, unit: str, *, log: bool = True
) -> None:
    """Bars with their values on top; ``log`` when the values span orders of magnitude."""
    bars = axes.bar(range(len(labels)), [_figure_value(v) for v in values], color="tab:blue")
    if log:
        axes.set_yscale("log")
        _plain(axes)
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_title(title)
    axes.set_ylabel(unit)
    for bar, value in zip(bars, values, strict=True):
        axes.annotate(
            f"{value:,.0f}" if value >= 10 else f"{value:.2g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _latencies(axes: Axes, labels: Sequence[str], latencies: Sequence[Mapping[str, Any]], title: str) -> None:
    width = 0.8 / len(PERCENTILES)
    for k, (key, name) in enumerate(PERCENTILES):
        xs = [x + (k - (len(PERCENTILES) - 1) / 2) * width for x in range(len(labels))]
        axes.bar(xs, [_figure_value(lat.get(key)) for lat in latencies], width, label=name)
    axes.set_yscale("log")
    _plain(axes)
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_title(title)
    axes.set_ylabel("ms")
    axes.legend(fontsize=8)


def _save(figure: Any, path: Path, caption: str) -> Path:
    figure.text(0.01, 0.01, caption, fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def scenario_chart(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Throughput (operations/s) and latency percentiles of each scenario."""
    labels = list(results)
    rates = [float(r["throughput"]["ops_per_s"]) for r in results.values()]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    _bars(left, labels, rates, "throughput per scenario (likes, ops or items counted /s)", "per second")
    _latencies(right, labels, [r["latency"] for r in results.values()], "request latency per scenario")
    first = next(iter(results.values()))
    kind = "quick (smoke sizes)" if first.get("quick") else "full size"
    return _save(figure, path, f"python -m bench scenarios, {kind}, commit {_commit(first)}")


def compare_chart(results: Mapping[str, Any], path: Path) -> Path:
    """Closed-loop like throughput and p99 latency of each system of ``compare``."""
    systems = results["systems"]
    labels = list(systems)
    closed = [systems[name]["closed"] for name in labels]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    rates = [float(c["achieved_rate"]) for c in closed]
    _bars(left, labels, rates, "like throughput (closed loop)", "likes/s", log=False)
    _latencies(right, labels, [c["latency"] for c in closed], "latency (closed loop)")
    kind = "quick (smoke sizes)" if results.get("quick") else "full size"
    return _save(figure, path, f"python -m bench compare, {kind}, commit {_commit(results)}")
