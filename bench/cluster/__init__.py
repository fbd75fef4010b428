"""Cluster measurements of issue 3: replication lag, anti-entropy cost, gossip bytes under load.

- **propagation**: on an idle cluster of real processes (``LocalCluster``), a like is PUT on a random
  node; from the moment its 200 arrives, every other node is polled (keep-alive, ~1 ms apart) until it
  answers ``liked: true``. A sample is the delay until *every* other node serves it (the max); the
  per-node delays are kept too. Samples are spaced by a random pause so each one meets an idle cluster
  and a random phase of the delta timer, whose interval bounds the lag from below.
- **anti-entropy**: two in-process ``Gossiper``s over real loopback TCP, each with a ``LikeStore``
  holding the same N items; one like on one side is made invisible to delta dissemination (its delta
  is drained and dropped), so only an anti-entropy round can carry it: the sweep A starts once the like
  has settled, or rounds the bench starts if that did not repair it. Bytes are the
  ``bytes_sent_anti_entropy`` of both sides from the like on; periodic rounds and delta pushes are
  switched off so nothing else is counted (``rounds`` = ``sweeps`` + ``rounds_started_here``).
- **gossip bytes**: a 3-node cluster takes a fixed-schedule load of distinct likes (``POST /v1/batch``
  from a separate process, so the client does not share an event loop with the measurement) and the
  nodes' gossip byte counters are read before and after; the figure is all gossip bytes (deltas,
  anti-entropy, membership) per like per peer. It only counts when every delta went out: a delta
  never sent costs no delta bytes but leaves anti-entropy to ship whole states. The run also reports
  failed probes, suspicions and bytes per delta actually sent. After the load the nodes must
  converge and every node's count total must equal the likes applied.

Timings default to the shipped ``cluster.yaml`` so the figures describe the product as configured.
Every loop is bounded in count and in time; a bound that is hit is reported, never waited out.

Modules: ``propagation``, ``antientropy`` and ``gossip_bytes`` (one measurement each) and ``report``
(the goals and the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cluster.antientropy import anti_entropy
from bench.cluster.gossip_bytes import gossip_bytes
from bench.cluster.propagation import propagation
from bench.cluster.report import GOALS, all_met, render
from bench.common import DEFAULT_OUT

__all__ = ["GOALS", "all_met", "anti_entropy", "gossip_bytes", "propagation", "render", "run_all"]


def run_all(*, quick: bool = False, out: Path | None = DEFAULT_OUT) -> dict[str, dict[str, Any]]:
    """The three measurements with their defaults (small ones in quick mode)."""
    results = {
        "propagation": propagation(quick=quick, out=out),
        "anti_entropy": anti_entropy(quick=quick, out=out),
        "gossip_bytes": gossip_bytes(quick=quick, out=out),
    }
    if out is not None:
        (out / "cluster.md").write_text(render(results) + "\n")
    return results
