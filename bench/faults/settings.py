"""One fault run's figures and the goals it is held to; the defaults are the issue's long run."""

from __future__ import annotations

from dataclasses import dataclass

from bench.disk import DEFAULT_DISK_BYTES
from bench.tcpproxy import Mangling

#: The node whose disk the ``disk`` nemesis breaks.
DISK_VICTIM = "n1"
#: Goal of the issue: every node equal within this many seconds of the heal.
CONVERGE_GOAL = 2.0
CONTENT_TYPE = "post"


#: The issue's bad network: 25% duplicated, 25% reordered, 10% dropped, and some old frames replayed.
ISSUE_MANGLING = Mangling(drop=0.10, duplicate=0.25, reorder=0.25, replay=0.05, max_delay=0.03)


@dataclass(frozen=True)
class Settings:
    """One run's figures; the defaults are the issue's long run."""

    nodes: int = 5
    #: How long the nemesis runs (faults on), in seconds.
    seconds: float = 60.0
    clients: int = 10
    items: int = 16
    #: Toggle and like-only pairs each client keeps in play at once.
    toggle_pairs: int = 24
    like_pairs: int = 8
    #: Share of operations on like-only pairs.
    like_only_share: float = 0.35
    #: A client's pause between operations, in seconds (bounds the offered load).
    think: float = 0.02
    #: Client timeout per operation: beyond it the operation is indeterminate.
    op_timeout: float = 2.0
    partition_every: float = 2.0
    kill_every: float = 10.0
    pause_seconds: float = 5.0
    pause_gap: float = 3.0
    mangling: Mangling = ISSUE_MANGLING
    #: Load before a sink outage starts, in seconds (the outage itself lasts ``seconds``).
    sink_lead: float = 3.0
    #: The disk nemesis: the tmpfs holding one node's data dir (bytes); fault cycles; how long each
    #: fault lasts and the load between faults (seconds); whether every other cycle fails fsyncs (the
    #: shim) instead of filling the disk; how long the node may take to take writes again.
    disk_bytes: int = DEFAULT_DISK_BYTES
    disk_cycles: int = 3
    disk_fault_seconds: float = 2.0
    disk_gap: float = 1.0
    disk_fsync_failures: bool = False
    disk_recover_timeout: float = 15.0
    converge_timeout: float = 60.0
    sink_timeout: float = 90.0
    seed: int = 1
    #: Gossip keys of cluster.yaml to override (none: the shipped timings are what is measured).
    gossip: tuple[tuple[str, int], ...] = ()
