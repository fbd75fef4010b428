"""What the measurements share: how they run their event loops and talk to the nodes, what they
record of the machine and the code measured (CPUs, load, CPU and memory per process, commit), the
statistics they report, and where they write results."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

#: Where a measurement writes its results unless told otherwise (``--out``).
DEFAULT_OUT = Path("bench/results")
#: Loopback HTTP with no proxy from the environment; a stuck request fails instead of hanging.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
_T = TypeVar("_T")


def run_async(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run on uvloop when installed: the cheapest client loop leaves the most CPU to measure with."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


def session() -> aiohttp.ClientSession:
    """A keep-alive client session for loopback: no proxy from the environment, bounded requests."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=REQUEST_TIMEOUT,
        trust_env=False,
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.05
) -> tuple[bool, float]:
    """Await ``check`` until true or ``timeout`` seconds; (held, seconds waited). Bounded in count too."""
    started = time.perf_counter()
    for _ in range(int(timeout / interval) + 2):
        if await check():
            return True, time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            break
        await asyncio.sleep(interval)
    return False, time.perf_counter() - started


# -- the machine and the code measured --------------------------------------------------------------


def host_info() -> dict[str, Any]:
    """CPUs and load average when a measurement starts: other work on the machine skews latencies."""
    return {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}


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


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU seconds of some processes and of the whole machine (Linux ``/proc``): figures taken on a
    saturated or shared machine must say so, or an overloaded node reads as a slow design."""

    at: float
    pids: dict[str, int]
    processes: dict[str, float | None]
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, pids: Mapping[str, int]) -> CpuSample:
        """CPU seconds of each named pid (None if unreadable) and the machine's (busy, total) ticks."""
        return cls(
            time.perf_counter(),
            dict(pids),
            {name: _process_cpu(pid) for name, pid in pids.items()},
            _machine_ticks(),
        )

    def usage_since(self) -> dict[str, Any]:
        """Cores each process used since this sample, and the busy share of the whole machine."""
        now = CpuSample.take(self.pids)
        elapsed = max(now.at - self.at, 1e-9)
        cores: dict[str, float | None] = {}
        for name, start in self.processes.items():
            end = now.processes.get(name)
            cores[name] = None if start is None or end is None else (end - start) / elapsed
        share = None
        if self.machine is not None and now.machine is not None:
            busy, total = (b - a for a, b in zip(self.machine, now.machine, strict=True))
            share = busy / total if total > 0 else None
        return {"cores": cores, "machine_busy_share": share, "cpus": os.cpu_count()}


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, from ``/proc/PID/stat``; None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_ticks() -> tuple[float, float] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from ``/proc/stat``."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return float(total - idle), float(total)


def rss_bytes(pid: int | None) -> int | None:
    """Resident set size of ``pid`` from ``/proc/<pid>/status`` (None where unavailable)."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- figures ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of delays given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
    }


def write_json(out: Path | None, name: str, results: Mapping[str, Any]) -> None:
    """Write ``results`` as ``out/name`` (no file when ``out`` is None)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
