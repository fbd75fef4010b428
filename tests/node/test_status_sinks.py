"""``likes status`` per checkpoint sink over the cluster: the largest lag, the pending items summed, and
"caught up" only when every node answered, all agree and none lags (what an operator waits for before
``likes restore``)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from node.config import NodeSpec
from node.process.status import NodeReport, render, status_json, summarize

WIDTH = 140
NAMES = ("n1", "n2", "n3")


def answer(name: str, mysql: dict[str, Any], *, fingerprint: str = "aa" * 16) -> dict[str, Any]:
    """A ``GET /v1/cluster`` answer with SQLite caught up and MySQL as given."""
    return {
        "node": {"name": name},
        "members": [{"name": m, "state": "alive", "incarnation": 0} for m in NAMES],
        "likes": 10,
        "fingerprint": fingerprint,
        "checkpoint": {"sqlite": {"pending_items": 0, "lag_ms": 0, "down": False}, "mysql": mysql},
    }


def report(index: int, view: dict[str, Any] | None) -> NodeReport:
    name = NAMES[index]
    spec = NodeSpec(name=name, host="127.0.0.1", http_port=8001 + index, gossip_port=9001 + index)
    return NodeReport(spec, view, None if view is not None else "unreachable: connection refused")


def lane(lag_ms: int, pending: int, *, down: bool = False) -> dict[str, Any]:
    return {"pending_items": pending, "lag_ms": lag_ms, "down": down}


def test_the_largest_lag_the_pending_summed_and_caught_up_only_when_no_node_lags() -> None:
    lagging = [
        report(0, answer("n1", lane(0, 0))),
        report(1, answer("n2", lane(1500, 3, down=True))),
        report(2, answer("n3", lane(2, 1))),
    ]
    mysql, sqlite = summarize(lagging).sinks
    assert (mysql.name, mysql.lag_s, mysql.pending, mysql.down_on) == ("mysql", 1.5, 4, ["n2"])
    assert not mysql.caught_up and mysql.reason == "no: n2, n3 lag"
    assert (sqlite.name, sqlite.lag_s, sqlite.pending, sqlite.caught_up) == ("sqlite", 0, 0, True)

    text = render_text(lagging)
    assert "│ mysql  │     1.5 s │             4 │ no: n2, n3 lag; down on n2 │" in text, text
    assert "│ sqlite │     0.0 s │             0 │ yes                        │" in text, text
    assert "<0.1 s, 1 pending" in text, "a lag of 2 ms printed as 0.0 s"
    assert text.splitlines()[-1] == "agree: yes, all 3 nodes hold the same state"
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert status_json(summarize(lagging))["sinks"][0] == {
        "name": "mysql",
        "lag_s": 1.5,
        "pending": 4,
        "down_on": ["n2"],
        "caught_up": False,
        "reason": "no: n2, n3 lag",
    }

    caught_up = [report(i, answer(name, lane(0, 0))) for i, name in enumerate(NAMES)]
    assert all(sink.caught_up and sink.reason is None for sink in summarize(caught_up).sinks)


def test_a_node_that_does_not_answer_or_disagrees_leaves_it_unknown_or_not_caught_up() -> None:
    two = [report(0, answer("n1", lane(0, 0))), report(1, answer("n2", lane(0, 0)))]
    (mysql, _) = summarize([*two, report(2, None)]).sinks
    assert not mysql.caught_up and mysql.reason == "unknown: no figure from n3"

    without_mysql = answer("n3", lane(0, 0))
    del without_mysql["checkpoint"]["mysql"]
    (mysql, _) = summarize([*two, report(2, without_mysql)]).sinks
    assert not mysql.caught_up and mysql.reason == "unknown: no figure from n3"

    apart = [report(i, answer(name, lane(0, 0), fingerprint=name * 16)) for i, name in enumerate(NAMES)]
    (mysql, _) = summarize(apart).sinks
    assert not mysql.caught_up and mysql.reason == "no: the nodes do not hold the same state yet"


def render_text(reports: list[NodeReport]) -> str:
    out = io.StringIO()
    render(summarize(reports), Console(file=out, width=WIDTH, color_system=None))
    return out.getvalue()
