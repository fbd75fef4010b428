"""``likes status``: ask every node of the cluster file how it sees the cluster, and whether they agree.

Agreement is judged on each node's store fingerprint (an order-independent digest over every item's
state): equal fingerprints mean equal stores, so after convergence every reachable node prints the
same one.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

from node.config import ClusterConfig, NodeSpec

#: How long one node may take to answer, in seconds.
QUERY_TIMEOUT = 2.0
#: Talks to the nodes directly: a proxy from the environment must not sit between us and them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class NodeReport:
    """What one node said, or why it said nothing."""

    spec: NodeSpec
    view: dict[str, Any] | None
    problem: str | None = None


def query(spec: NodeSpec, timeout: float = QUERY_TIMEOUT) -> NodeReport:
    """``GET /v1/cluster`` of one node."""
    try:
        with _DIRECT.open(f"{spec.url}/v1/cluster", timeout=timeout) as response:
            view = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return NodeReport(spec, None, f"unreachable: {getattr(exc, 'reason', exc)}")
    if not isinstance(view, dict):
        return NodeReport(spec, None, "answered something that is not a cluster view")
    return NodeReport(spec, view)


def report_status(config: ClusterConfig, *, out: TextIO = sys.stdout) -> int:
    """Print every node's view; 0 if all answered and agree, 1 otherwise."""
    with ThreadPoolExecutor(max_workers=min(16, len(config.nodes))) as pool:
        reports = list(pool.map(query, config.nodes))
    for report in reports:
        print(_line(report), file=out)
    prints = {report.view.get("fingerprint") for report in reports if report.view is not None}
    reachable = sum(report.view is not None for report in reports)
    if reachable == len(reports) and len(prints) == 1:
        print(f"agree: yes, all {reachable} nodes hold the same state", file=out)
        return 0
    if reachable == 0:
        print("agree: unknown, no node answered", file=out)
    elif len(prints) == 1:
        print(
            f"agree: yes among the {reachable} reachable node(s); {len(reports) - reachable} unreachable",
            file=out,
        )
    else:
        print(f"agree: no, {len(prints)} different states among {reachable} node(s)", file=out)
    return 1


def _line(report: NodeReport) -> str:
    name, url = report.spec.name, report.spec.url
    if report.view is None:
        return f"{name:<8} {url:<28} DOWN  {report.problem}"
    view = report.view
    members = " ".join(
        f"{m.get('name')}:{m.get('state')}" for m in view.get("members", []) if isinstance(m, dict)
    )
    fingerprint = str(view.get("fingerprint", "?"))[:12]
    return (
        f"{name:<8} {url:<28} up    items={view.get('items', '?'):<8} state={fingerprint}  members: {members}"
    )
