"""Workload scenarios of issue 5: a real cluster under a named load, then whether it holds what it must.

Scenarios (``python -m bench scenario NAME``; ``python -m bench scenarios`` runs them all):

- **hot-post**: N distinct users (1,000,000) like one post, spread over every node, offered at
  3,340/s open loop ("a million likes in five minutes": 3,333/s would offer the last like at 300.03 s,
  so the schedule alone would overrun the 300 s it must complete in; 3,340/s ends it at 299.4 s and
  is slightly more than asked); ``--max`` offers them closed loop instead
  (``hot-post-max``), as fast as the cluster takes them. Checkpoints to Redis and MySQL are on.
- **peak**: 10,000 new likes/s offered for 30 s, spread over the nodes.
- **zipf**: likes over 100,000 items with Zipf popularity (exponent 1), 20% of the requests unlike an
  earlier acknowledged like (sent to the same node, after its answer); the generator knows the final
  state. Checkpoints to Redis and MySQL are on.
- **reads**: ``POST /v1/counts`` of 100 items per request, closed loop, against items populated with
  known counts beforehand (every answer is checked).
- **batch**: ``POST /v1/batch`` of ``api.max_batch_ops`` (1,000) new likes per request into one node,
  closed loop.

Each starts its own cluster (``LocalCluster``, the shipped ``cluster.yaml``; 3 nodes) and stops it,
or loads a running cluster given with ``--urls`` and leaves it running. Sinks, when on, get a private
Redis key prefix and a private MySQL database, both removed afterwards.

After every load: **exactness** (every node's count of every item touched equals the baseline plus
what the answers acknowledged; Redis ``like:count`` / ``like:status`` and MySQL ``like_item_state`` /
``like_records`` too when on, with the seconds after the load they took to get there), **convergence**
(seconds until the nodes' fingerprints agree), **gossip bytes** per like (all nodes' ``bytes_sent``
from ``/v1/cluster``), **RSS** per node (``/proc/<pid>/status`` VmRSS, before and after) and bytes per
held like, errors by HTTP status, throughput and latency. A request that failed may or may not have
been applied: its operations are counted as uncertain, and an item with uncertain operations is
exact when its count lies within them.

Every load is bounded in requests and in time, every wait after it in time. Quick mode (``--quick``)
runs a few thousand operations per scenario for a few seconds: a smoke test, not the product's figures.

Modules: ``spec`` (each scenario), ``run`` (a run end to end), ``nodes`` (reading the cluster),
``sinks`` (Redis and MySQL), ``record`` (what a run records, the goals judged) and ``report``.
"""

from __future__ import annotations

from bench.scenarios.report import all_met, render
from bench.scenarios.run import CONVERGE_TIMEOUT, SINK_TIMEOUT, run_all, run_scenario
from bench.scenarios.spec import ALL, NAMES, Scenario, ScenarioError, scenario

__all__ = [
    "ALL",
    "CONVERGE_TIMEOUT",
    "NAMES",
    "SINK_TIMEOUT",
    "Scenario",
    "ScenarioError",
    "all_met",
    "render",
    "run_all",
    "run_scenario",
    "scenario",
]
