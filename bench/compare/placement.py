"""Where the servers and the load generator run (one CPU each, where the machine has two), and what
the CPU figures say capped a throughput."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import pinning_possible

#: The servers run on CPU 0, the load generator on CPU 1.
SERVER_CPUS, LOAD_CPUS = (0,), (1,)
#: A process using at least this share of its core(s) is what bounded the throughput.
SATURATED = 0.9


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
