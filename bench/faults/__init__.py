"""``python -m bench faults``: a Jepsen-style fault harness proving no loss and no duplication.

A real cluster of ``likes node`` processes on loopback takes likes and unlikes from many concurrent
clients while a *nemesis* breaks it; then the faults are healed and a *checker* compares what every
node holds with what the clients were told. The same code runs the bounded CI version
(``tests/faults/``) and the long run here, so the figures and the test prove the same thing.

**Workload.** Each client owns distinct (item, user) pairs, so every pair's history is one client's
sequence of operations and its expected final state is well defined:

- *like-only* pairs get likes on random nodes (retries of one like through any node: the no
  duplication case);
- *toggle* pairs get likes and unlikes, always through the pair's *home* node (chosen at random
  per pair). An unlike removes only the likes its node has observed (observed-remove semantics), so
  sending a pair's unlike to a node that has not yet seen its like would legitimately leave the like
  in place; ordering one user's writes across nodes is what session tokens are for, not this test.

Every operation is recorded as ``ok`` (200), ``fail`` (nothing sent: connection refused; or a 4xx,
which changes nothing), ``refused`` (503 ``not_durable``: the node could not make it durable and says
it changed nothing) or ``info`` (indeterminate: a timeout, a reset after sending, any other 5xx). A
toggle pair is retired after an indeterminate operation, since it might still land after a later one.

**Checker.** A pair may end liked if its last ``ok`` operation is a like or any indeterminate
operation is, and unliked if its last ``ok`` is an unlike, it has none, or any indeterminate operation
is an unlike; failed and refused operations never happened. *Lost*: an acknowledged state not held
after heal (an acknowledged like missing, or an acknowledged unlike undone by nothing the client
attempted). *Phantom*: a liker the history cannot explain (never attempted, or present though only
unlikes could have been last), including a refused write whose effect shows (``refused_visible``: a
refused like held, or a refused unlike's like gone, with no later acknowledged operation to explain
it). Also: every node's
count equals the size of its liker list, no liker listed twice, every node holds the same sets and
the same ``/v1/cluster`` fingerprint, and how long after the heal that took.

**Nemeses.** ``partition`` (halves, one node isolated, a bridge; a new one every 2 s, through the
test-only fault layer ``gossip.faults``), ``kill`` (``kill -9`` of a random node, restarted once the
others have declared it dead), ``pause`` (SIGSTOP for 5 s, SIGCONT), ``proxy`` (every node's gossip
through a ``FrameProxy`` that drops 10%, duplicates 25%, reorders 25% and replays 5% of frames) and
``sinks`` (Redis and MySQL behind cut proxies) and ``disk`` (one node's data dir on a 2 MiB tmpfs
that is filled and freed, and with ``disk_fsync_failures`` every other cycle its fsyncs failing with
EIO through an LD_PRELOAD shim; ``bench.disk``; root, and gcc for the shim). After each disk fault the
nemesis times how long the node takes to take writes again (its first acknowledged write, and
``/readyz`` 200), then kills and restarts it, so what its log replays is checked too. The failure
detector is watched throughout: dead verdicts about a paused node (false) against the detection time
of a real kill.

The cluster file is the shipped ``cluster.yaml`` with only nodes, data directory, secret and (for
``sinks``) the checkpoint URLs replaced, so the figures describe the shipped timings.

Modules: ``settings`` (a run's figures), ``cluster`` (the nodes and the fault plan), ``history`` and
``workload`` (the clients and what they learned), ``watcher`` (the failure detector's verdicts),
``nemeses``, ``sinks`` (Redis and MySQL behind proxies), ``checker``, ``scenario`` (one run, and the
command) and ``report``.
"""

from __future__ import annotations

from bench.faults.nemeses import NEMESES
from bench.faults.report import all_met, render
from bench.faults.scenario import run, run_scenario
from bench.faults.settings import CONVERGE_GOAL, Settings
from bench.faults.sinks import SinkServersUnavailable

__all__ = [
    "CONVERGE_GOAL",
    "NEMESES",
    "Settings",
    "SinkServersUnavailable",
    "all_met",
    "render",
    "run",
    "run_scenario",
]
