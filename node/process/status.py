"""``likes status``: ask every node of the cluster file how it sees the cluster, and whether they agree.

It prints (with rich) one row per node of the file, a member-state matrix (how each node that answered
sees every member) and an agreement line; ``--json`` prints the same as one object for scripts.

Agreement is judged on each node's store fingerprint (an order-independent digest over every item's
state): equal fingerprints mean equal stores, so after convergence every reachable node prints the
same one. The exit status is 0 only when every node answered, all hold the same state, and every
node's write-ahead log takes writes: a node whose log failed serves reads but refuses every write,
so it is named below the table (with why and since when) and the status is 1.

Lag, per node, in three figures from its ``GET /v1/cluster``:

- **behind**: how many fewer likes it holds than the reachable node that holds the most (``likes``,
  the sum of its items' counts). 0 everywhere once the cluster has converged; while likes are in
  flight it is roughly how many have not reached this node yet (an unlike not yet seen elsewhere can
  make the node that has it look behind, so it is a gauge, and the fingerprints decide agreement).
- **WAL p50**: the median time a write waited for its log record to be fsynced over the last 256
  group commits (``wal.group_commit_p50_ms``): how far durability trails acceptance (``-`` until the
  node has taken a write of its own).
- **checkpoint lag**: the age of the oldest change the node holds, for an item it owns, that is not
  yet in a checkpoint sink (restorable from it, for MySQL), the largest over the node's sinks
  (``checkpoint.<sink>.lag_ms``, in seconds), with the items pending and the sinks that are down.

Then each sink over the cluster: its largest lag over the nodes, its pending items summed over them
(each node counts the items it owns), and whether it is caught up: every node answered, all hold the
same state and none lags, so every like acknowledged before this read is in the sink (for MySQL:
``likes restore --from mysql`` brings it back). Each node counts a change from when it reached its
store, before the like was answered, until the sink can give it back, so a lag of 0 is never early.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from node.config import ClusterConfig, NodeSpec

#: How long one node may take to answer, in seconds.
QUERY_TIMEOUT = 2.0
#: Talks to the nodes directly: a proxy from the environment must not sit between us and them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Width of the tables when the output is not a terminal (a pipe, a file): wide enough for every
#: column of a node on one line.
PIPE_WIDTH = 140
#: How much of a fingerprint the table shows: enough to tell states apart at a glance.
FINGERPRINT_CHARS = 12
#: Colour of each member state in the tables.
STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red"}


@dataclass(frozen=True)
class NodeReport:
    """What one node said, or why it said nothing."""

    spec: NodeSpec
    view: dict[str, Any] | None
    problem: str | None = None


@dataclass
class NodeRow:
    """One node's line of the status: what it answered, reduced to what an operator compares."""

    name: str
    url: str
    up: bool
    problem: str | None = None
    #: Its own state and incarnation as it advertises them.
    state: str | None = None
    incarnation: int | None = None
    items: int | None = None
    likes: int | None = None
    #: Likes fewer than the reachable node holding the most (see the module docstring).
    behind: int | None = None
    wal_commit_p50_ms: float | None = None
    #: Why its write-ahead log refuses writes (None while it takes them), since when (Unix seconds), and
    #: how many times it failed and recovered since the node started.
    wal_failure: str | None = None
    wal_failed_since: float | None = None
    wal_failures: int | None = None
    wal_recoveries: int | None = None
    #: Its item store: items read in so far while a start still reads it (None once read whole), and
    #: why it refuses writes if it found a damaged state meanwhile.
    store_loading: int | None = None
    store_failure: str | None = None
    checkpoint_lag_s: float | None = None
    checkpoint_pending: int | None = None
    #: Each checkpoint sink as this node reports it.
    sinks: dict[str, SinkLag] = field(default_factory=dict)
    sinks_down: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    #: How this node sees each member: name -> state.
    members: dict[str, str] = field(default_factory=dict)


@dataclass
class SinkLag:
    """One checkpoint sink as one node reports it (``checkpoint.<sink>`` of ``GET /v1/cluster``)."""

    lag_ms: int | None
    pending: int | None
    down: bool


@dataclass
class SinkSummary:
    """One checkpoint sink over the cluster: what an operator checks before ``likes restore``."""

    name: str
    #: The largest lag over the nodes that answered, in seconds.
    lag_s: float
    #: Items pending, summed over the nodes that answered (each counts the items it owns).
    pending: int
    #: The nodes that answered and report the sink down.
    down_on: list[str]
    #: Every node answered, all hold the same state and none lags: every like acknowledged before the
    #: read is in the sink.
    caught_up: bool
    #: Why it is not caught up, as printed (None when it is).
    reason: str | None


@dataclass
class ClusterStatus:
    """Every node's row, and whether they agree."""

    nodes: list[NodeRow]
    agree: bool
    #: The agreement line, as printed.
    verdict: str
    #: Each checkpoint sink over the cluster, by name.
    sinks: list[SinkSummary] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every node answered, all hold the same state and every log takes writes, 1 otherwise."""
        healthy = all(
            row.up and row.wal_failure is None and row.store_failure is None for row in self.nodes
        )
        return 0 if self.agree and healthy else 1

    def member_names(self) -> list[str]:
        """The nodes of the file, then any other member some node reported, in order."""
        names = [row.name for row in self.nodes]
        seen = sorted({name for row in self.nodes for name in row.members} - set(names))
        return names + seen


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


def gather(config: ClusterConfig) -> list[NodeReport]:
    """Every node's answer, asked in parallel."""
    with ThreadPoolExecutor(max_workers=min(16, len(config.nodes))) as pool:
        return list(pool.map(query, config.nodes))


def summarize(reports: list[NodeReport]) -> ClusterStatus:
    """The rows, the likes each is behind, and the verdict on agreement."""
    rows = [_row(report) for report in reports]
    held = [row.likes for row in rows if row.likes is not None]
    for row in rows:
        if row.likes is not None:
            row.behind = max(held) - row.likes
    prints = {row.fingerprint for row in rows if row.up}
    reachable = sum(row.up for row in rows)
    agree = reachable > 0 and len(prints) == 1
    if reachable == len(rows) and agree:
        verdict = f"agree: yes, all {reachable} nodes hold the same state"
    elif reachable == 0:
        verdict = "agree: unknown, no node answered"
    elif agree:
        verdict = f"agree: yes among the {reachable} reachable node(s); {len(rows) - reachable} unreachable"
    else:
        verdict = f"agree: no, {len(prints)} different states among {reachable} node(s)"
    return ClusterStatus(rows, agree, verdict, _sink_summaries(rows, agree))


def _sink_summaries(rows: list[NodeRow], agree: bool) -> list[SinkSummary]:
    """Each sink any node reports: the largest lag, the pending summed, and whether it is caught up."""
    up = [row for row in rows if row.up]
    summaries = []
    for name in sorted({name for row in up for name in row.sinks}):
        lanes = {row.name: row.sinks.get(name) for row in up}
        lags = {node: lane.lag_ms for node, lane in lanes.items() if lane is not None}
        down_on = [node for node, lane in lanes.items() if lane is not None and lane.down]
        unknown = [row.name for row in rows if not row.up] + [n for n, lag in lags.items() if lag is None]
        unknown += [node for node, lane in lanes.items() if lane is None]
        lagging = [node for node, lag in lags.items() if lag]
        if unknown:
            reason: str | None = f"unknown: no figure from {', '.join(unknown)}"
        elif lagging:
            reason = f"no: {', '.join(lagging)} lag{'s' if len(lagging) == 1 else ''}"
        elif not agree:
            reason = "no: the nodes do not hold the same state yet"
        else:
            reason = None
        summaries.append(
            SinkSummary(
                name=name,
                lag_s=max((lag or 0 for lag in lags.values()), default=0) / 1000,
                pending=sum(lane.pending or 0 for lane in lanes.values() if lane is not None),
                down_on=down_on,
                caught_up=reason is None,
                reason=reason,
            )
        )
    return summaries


def report_status(
    config: ClusterConfig, *, out: TextIO | None = None, as_json: bool = False, width: int | None = None
) -> int:
    """Print every node's view (tables, or JSON with ``as_json``) to ``out`` (stdout); 0 if all
    answered and agree."""
    out = sys.stdout if out is None else out
    status = summarize(gather(config))
    if as_json:
        print(json.dumps(status_json(status), indent=2), file=out)
    else:
        console = Console(file=out, width=width or (None if out.isatty() else PIPE_WIDTH), soft_wrap=False)
        render(status, console)
    return status.exit_status


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """What ``--json`` prints: the rows, the verdict and the exit status."""
    return {
        "agree": status.agree,
        "verdict": status.verdict,
        "exit_status": status.exit_status,
        "nodes": [asdict(row) for row in status.nodes],
        "sinks": [asdict(sink) for sink in status.sinks],
    }


def render(status: ClusterStatus, console: Console) -> None:
    """The node table, the member matrix, the unreachable nodes' reasons and the verdict."""
    console.print(Text("nodes", style="bold"))
    console.print(_node_table(status))
    if status.sinks:
        console.print(Text("checkpoint sinks, over the cluster", style="bold"))
        console.print(_sink_table(status))
        console.print(
            "lag: the largest over the nodes; pending: summed over the nodes, each counting the items it "
            "owns; caught up: every node answered, all agree and none lags, so every like acknowledged "
            "before this read is in the sink (for MySQL: likes restore --from mysql brings it back)",
            style="dim",
        )
    console.print(Text("members, as each node sees them", style="bold"))
    console.print(_member_matrix(status))
    for row in status.nodes:
        if not row.up:
            console.print(Text(f"{row.name} is down: {row.problem}", style="red"))
        elif row.wal_failure is not None:
            console.print(Text(f"{row.name} refuses writes{_wal_failure(row)}", style="red"))
        elif row.store_failure is not None:
            console.print(Text(f"{row.name} refuses writes: {row.store_failure}", style="red"))
        elif row.store_loading is not None:
            text = f"{row.name} is reading its item store in ({row.store_loading:,} items so far): not ready"
            console.print(Text(text, style="yellow"))
        elif row.wal_failures:
            text = f"{row.name} takes writes again: its write-ahead log {_wal_history(row)}"
            console.print(Text(text, style="yellow"))
    console.print(Text(status.verdict, style="bold green" if status.exit_status == 0 else "bold red"))


def _node_table(status: ClusterStatus) -> Table:
    table = Table(
        caption="behind: likes fewer than the node holding the most; WAL p50: median wait for a log "
        "fsync; checkpoint lag: age of the oldest change not yet in a sink",
        caption_justify="left",
    )
    table.add_column("node", style="bold", no_wrap=True)
    table.add_column("url", no_wrap=True)
    table.add_column("up", no_wrap=True)
    table.add_column("self", no_wrap=True)
    for name in ("items", "likes", "behind", "WAL p50"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("checkpoint lag", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True)
    for row in status.nodes:
        if not row.up:
            table.add_row(row.name, row.url, Text("DOWN", style="bold red"), *["-"] * 7)
            continue
        table.add_row(
            row.name,
            row.url,
            Text("up", style="green"),
            _state(row.state, f"@{row.incarnation}" if row.incarnation is not None else ""),
            _number(row.items),
            _number(row.likes),
            Text(_number(row.behind), style="yellow" if row.behind else ""),
            _wal(row),
            _checkpoint(row),
            (row.fingerprint or "?")[:FINGERPRINT_CHARS],
        )
    return table


def _member_matrix(status: ClusterStatus) -> Table:
    """How each node that answered (rows) sees every member (columns)."""
    names = status.member_names()
    table = Table()
    table.add_column("node \\ member", style="bold", no_wrap=True)
    for name in names:
        table.add_column(name, no_wrap=True)
    for row in status.nodes:
        if row.up:
            table.add_row(row.name, *(_state(row.members.get(name)) for name in names))
        else:
            table.add_row(row.name, *(Text("?", style="dim") for _ in names))
    return table


def _state(state: str | None, suffix: str = "") -> Text:
    if state is None:
        return Text("-", style="dim")
    return Text(state + suffix, style=STATE_STYLES.get(state, ""))


def _number(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _wal(row: NodeRow) -> Text | str:
    """The WAL column: its commit latency, or that it failed (the reason is printed below the table)."""
    if row.wal_failure is not None:
        return Text("FAILED", style="bold red")
    return "-" if row.wal_commit_p50_ms is None else f"{row.wal_commit_p50_ms:.1f} ms"


def _wal_failure(row: NodeRow) -> str:
    """Since when a node's log refuses writes, why, and its history."""
    since = ""
    if row.wal_failed_since is not None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.wal_failed_since))
        since = f" since {at} ({_duration(time.time() - row.wal_failed_since)} ago)"
    return f"{since}: {row.wal_failure} (its write-ahead log {_wal_history(row)})"


def _wal_history(row: NodeRow) -> str:
    """How often the log failed and recovered since the node started: a disk that keeps failing and
    recovering deserves a look even while the node takes writes."""
    failures, recoveries = row.wal_failures or 0, row.wal_recoveries or 0
    return f"failed {failures}x and recovered {recoveries}x since the node started"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sink_table(status: ClusterStatus) -> Table:
    """Each sink's largest lag, pending summed and whether every like acknowledged is in it."""
    table = Table()
    table.add_column("sink", style="bold", no_wrap=True)
    table.add_column("lag (max)", justify="right", no_wrap=True)
    table.add_column("pending (sum)", justify="right", no_wrap=True)
    table.add_column("caught up", no_wrap=True)
    for sink in status.sinks:
        verdict = Text("yes", style="green") if sink.caught_up else Text(sink.reason or "no", style="yellow")
        if sink.down_on:
            verdict.append(f"; down on {', '.join(sink.down_on)}", style="red")
        table.add_row(sink.name, _seconds(sink.lag_s), _number(sink.pending), verdict)
    return table


def _seconds(lag: float) -> str:
    """A lag in seconds; one that is not 0 never prints as 0.0."""
    return "<0.1 s" if 0 < lag < 0.05 else f"{lag:.1f} s"


def _checkpoint(row: NodeRow) -> Text:
    if row.checkpoint_lag_s is None:
        return Text("no sinks", style="dim")
    text = _seconds(row.checkpoint_lag_s)
    if row.checkpoint_pending:
        text += f", {row.checkpoint_pending:,} pending"
    if row.sinks_down:
        return Text(f"{text}, {'+'.join(row.sinks_down)} down", style="red")
    return Text(text, style="yellow" if row.checkpoint_lag_s >= 1 else "")


def _row(report: NodeReport) -> NodeRow:
    """One node's answer, read defensively: a field it lacks (an older node) shows as unknown."""
    spec, view = report.spec, report.view
    if view is None:
        return NodeRow(spec.name, spec.url, up=False, problem=report.problem)
    row = NodeRow(spec.name, spec.url, up=True)
    me = view.get("node", {}).get("name", spec.name) if isinstance(view.get("node"), dict) else spec.name
    for member in view.get("members", []):
        if isinstance(member, dict) and isinstance(member.get("name"), str):
            row.members[member["name"]] = str(member.get("state", "?"))
            if member["name"] == me:
                row.state = str(member.get("state", "?"))
                incarnation = member.get("incarnation")
                row.incarnation = incarnation if isinstance(incarnation, int) else None
    row.items = _int(view.get("items"))
    row.likes = _int(view.get("likes"))
    fingerprint = view.get("fingerprint")
    row.fingerprint = fingerprint if isinstance(fingerprint, str) else None
    wal = view.get("wal")
    if isinstance(wal, dict) and isinstance(wal.get("group_commit_p50_ms"), int | float):
        row.wal_commit_p50_ms = float(wal["group_commit_p50_ms"])
    if isinstance(wal, dict):
        failure, since = wal.get("failure"), wal.get("failed_since")
        row.wal_failure = None if failure is None else str(failure)
        row.wal_failed_since = float(since) if isinstance(since, int | float) else None
        row.wal_failures = _int(wal.get("failures"))
        row.wal_recoveries = _int(wal.get("recoveries"))
        store = wal.get("item_store")
        if isinstance(store, dict):
            row.store_loading = _int(store.get("loaded_items")) if store.get("loading") is True else None
            failure = store.get("failure")
            row.store_failure = None if failure is None else str(failure)
    sinks = view.get("checkpoint")
    if isinstance(sinks, dict) and sinks:
        lanes = [(name, lane) for name, lane in sinks.items() if isinstance(lane, dict)]
        row.checkpoint_lag_s = max((_int(lane.get("lag_ms")) or 0 for _, lane in lanes), default=0) / 1000
        row.checkpoint_pending = sum(_int(lane.get("pending_items")) or 0 for _, lane in lanes)
        row.sinks_down = sorted(name for name, lane in lanes if lane.get("down") is True)
        row.sinks = {
            name: SinkLag(_int(lane.get("lag_ms")), _int(lane.get("pending_items")), lane.get("down") is True)
            for name, lane in lanes
        }
    return row


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
