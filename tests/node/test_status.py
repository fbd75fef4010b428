"""``likes status``: the rows, lag and verdict it derives from each node's ``GET /v1/cluster``, the tables
it renders, and the whole command against real node processes (one of them killed)."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import orjson
import pytest

from node.config import NodeSpec, load_config
from node.http.api import DURABILITY
from node.process.cli import main
from node.process.status import NodeReport, report_status, status_json, summarize
from tests.node.conftest import Client
from tests.node.processes import NodeProcesses

WIDTH = 140


def spec(name: str, port: int) -> NodeSpec:
    return NodeSpec(name=name, host="127.0.0.1", http_port=port, gossip_port=port + 1000)


def view(name: str, *, likes: int, fingerprint: str, states: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A ``GET /v1/cluster`` answer, reduced to what the status reads."""
    return {
        "node": {"name": name},
        "members": [{"name": m, "state": s, "incarnation": 2 if m == name else 0} for m, s in states.items()],
        "items": 3,
        "likes": likes,
        "fingerprint": fingerprint,
        "wal": {"group_commit_p50_ms": 1.25},
        "checkpoint": {
            "sqlite": {"pending_items": 0, "lag_ms": 0, "down": False},
            "redis": {"pending_items": 7, "lag_ms": 4200, "down": True},
        },
        **extra,
    }


def render(reports: list[NodeReport]) -> str:
    from rich.console import Console

    from node.process.status import render as render_status

    out = io.StringIO()
    render_status(summarize(reports), Console(file=out, width=WIDTH, color_system=None))
    return out.getvalue()


def test_lag_is_likes_behind_the_node_holding_most_and_the_oldest_unwritten_change() -> None:
    states = {"n1": "alive", "n2": "alive", "n3": "suspect"}
    reports = [
        NodeReport(spec("n1", 8001), view("n1", likes=120, fingerprint="aa" * 16, states=states)),
        NodeReport(spec("n2", 8002), view("n2", likes=100, fingerprint="bb" * 16, states=states)),
        NodeReport(spec("n3", 8003), None, "unreachable: connection refused"),
    ]
    status = summarize(reports)
    n1, n2, n3 = status.nodes
    assert (n1.behind, n2.behind, n3.behind) == (0, 20, None)
    assert n1.checkpoint_lag_s == 4.2 and n1.checkpoint_pending == 7 and n1.sinks_down == ["redis"]
    assert (n1.state, n1.incarnation, n1.wal_commit_p50_ms) == ("alive", 2, 1.25)
    assert n2.members == states and not n3.up
    assert not status.agree and status.exit_status == 1
    assert status.verdict == "agree: no, 2 different states among 2 node(s)"


def test_the_verdicts_and_exit_statuses() -> None:
    one = {"n1": "alive", "n2": "alive"}
    same = [
        NodeReport(spec(n, 8000 + i), view(n, likes=5, fingerprint="cc" * 16, states=one))
        for i, n in enumerate(("n1", "n2"))
    ]
    assert summarize(same).exit_status == 0
    assert summarize(same).verdict == "agree: yes, all 2 nodes hold the same state"
    partly = [same[0], NodeReport(spec("n2", 8001), None, "unreachable")]
    assert summarize(partly).exit_status == 1
    assert summarize(partly).verdict == "agree: yes among the 1 reachable node(s); 1 unreachable"
    none = [NodeReport(spec("n1", 8000), None, "unreachable")]
    assert summarize(none).exit_status == 1 and summarize(none).verdict == "agree: unknown, no node answered"


def test_an_older_node_without_the_new_fields_shows_them_as_unknown() -> None:
    old = {"node": {"name": "n1"}, "members": [{"name": "n1", "state": "alive"}], "fingerprint": "dd"}
    (row,) = summarize([NodeReport(spec("n1", 8001), old)]).nodes
    assert row.up and row.likes is None and row.behind is None and row.checkpoint_lag_s is None
    assert "│ n1   │ http://127.0.0.1:8001 │ up │ alive │     ? │     ? │      ? │       - │ no sinks" in (
        render([NodeReport(spec("n1", 8001), old)])
    )


def test_the_tables_show_each_node_and_how_each_sees_the_others() -> None:
    states = {"n1": "alive", "n2": "alive", "n3": "dead"}
    text = render(
        [
            NodeReport(spec("n1", 8001), view("n1", likes=1200, fingerprint="ab" * 16, states=states)),
            NodeReport(spec("n2", 8002), view("n2", likes=1190, fingerprint="cd" * 16, states=states)),
            NodeReport(spec("n3", 8003), None, "unreachable: connection refused"),
        ]
    )
    lines = text.splitlines()
    assert any(
        re.fullmatch(
            r"│ n2 +│ http://127\.0\.0\.1:8002 │ up +│ alive@2 │ +3 │ +1,190 │ +10 │ +1\.2 ms │ "
            r"4\.2 s, 7 pending, redis down │ cdcdcdcdcdcd │",
            line.rstrip(),
        )
        for line in lines
    ), text
    assert any(re.fullmatch(r"│ n3 +│ http://127\.0\.0\.1:8003 │ DOWN │ -.*", line) for line in lines), text
    matrix = [line.rstrip() for line in lines if re.match(r"│ n\d +│ (alive|dead|\?) ", line)]
    assert [re.sub(r"\s+", " ", row) for row in matrix] == [
        "│ n1 │ alive │ alive │ dead │",
        "│ n2 │ alive │ alive │ dead │",
        "│ n3 │ ? │ ? │ ? │",
    ], text
    assert "n3 is down: unreachable: connection refused" in text
    assert lines[-1] == "agree: no, 2 different states among 2 node(s)"
    assert all(len(line) <= WIDTH for line in lines)


async def test_a_node_whose_log_failed_is_named_and_the_exit_status_is_1(client: Client) -> None:
    """n1's answer is a real node's ``GET /v1/cluster`` while its log refuses writes; the nodes agree."""
    reason = "the write-ahead log failed: [Errno 28] No space left on device"
    wal = client.app[DURABILITY].wal
    wal.failure, wal.failed_since, wal.failures, wal.recoveries = reason, time.time() - 90, 2, 1
    failed = await (await client.get("/v1/cluster")).json()
    states = {"n1": "alive", "n2": "alive"}
    healthy = view("n2", likes=0, fingerprint=failed["fingerprint"], states=states)
    reports = [NodeReport(spec("n1", 8001), failed), NodeReport(spec("n2", 8002), healthy)]
    status = summarize(reports)
    n1, n2 = status.nodes
    assert (n1.wal_failure, n1.wal_failures, n1.wal_recoveries) == (reason, 2, 1) and n2.wal_failure is None
    assert status.agree and status.verdict == "agree: yes, all 2 nodes hold the same state"
    assert status.exit_status == 1 and status_json(status)["exit_status"] == 1
    assert status_json(status)["nodes"][0]["wal_failure"] == reason

    text = render(reports)
    fingerprint = failed["fingerprint"][:12]
    row = (
        r"│ n1 +│ http://127\.0\.0\.1:8001 │ up │ alive@0 │ +0 │ +0 │ +0 │ +FAILED │ no sinks +│ "
        rf"{fingerprint} │"
    )
    assert any(re.fullmatch(row, line.rstrip()) for line in text.splitlines()), text
    said = " ".join(text.split())  # the line wraps at the console's width
    assert re.search(
        r"n1 refuses writes since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(9\d s ago\): "
        + re.escape(f"{reason} (its write-ahead log failed 2x and recovered 1x since the node started)"),
        said,
    ), text
    assert text.splitlines()[-1] == "agree: yes, all 2 nodes hold the same state"


def test_a_log_that_failed_and_recovered_leaves_the_exit_status_0() -> None:
    states = {"n1": "alive"}
    wal = {"group_commit_p50_ms": 1.25, "failure": None, "failed_since": None, "failures": 1, "recoveries": 1}
    answer = view("n1", likes=5, fingerprint="ee" * 16, states=states, wal=wal)
    reports = [NodeReport(spec("n1", 8001), answer)]
    status = summarize(reports)
    assert status.exit_status == 0 and status.nodes[0].wal_failures == 1
    text = render(reports)
    said = "n1 takes writes again: its write-ahead log failed 1x and recovered 1x since the node started"
    assert said in " ".join(text.split())
    assert "FAILED" not in text and "1.2 ms" in text


@pytest.mark.parametrize(
    ("store", "said", "exit_status"),
    [
        (
            {"loading": True, "loaded_items": 250_000, "failure": None},
            "n1 is reading its item store in (250,000 items so far): not ready",
            0,
        ),
        (
            {"loading": True, "loaded_items": 9, "failure": "items.db: item b'x' fails its checksum"},
            "n1 refuses writes: items.db: item b'x' fails its checksum",
            1,
        ),
    ],
)
def test_an_item_store_being_read_in_or_found_damaged_is_named(
    store: dict[str, object], said: str, exit_status: int
) -> None:
    wal = {"group_commit_p50_ms": 1.25, "failure": None, "failures": 0, "recoveries": 0, "item_store": store}
    answer = view("n1", likes=5, fingerprint="ee" * 16, states={"n1": "alive"}, wal=wal)
    reports = [NodeReport(spec("n1", 8001), answer)]
    assert summarize(reports).exit_status == exit_status
    assert said in " ".join(render(reports).split())


# -- against real nodes --------------------------------------------------------------------------


@pytest.mark.cluster
def test_status_of_a_real_cluster_before_and_after_a_node_is_killed(
    nodes: NodeProcesses, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes.start_all()
    for user in range(5):
        nodes.call("n1", "PUT", f"/v1/items/post/1/likes/{user}")
    nodes.call("n2", "PUT", "/v1/items/post/2/likes/7")
    fingerprints = lambda: {nodes.call(n, "GET", "/v1/cluster")["fingerprint"] for n in nodes.names}  # noqa: E731
    nodes.eventually(lambda: len(fingerprints()) == 1, "every node holds the same state")
    config = load_config(nodes.config)

    out = io.StringIO()
    assert report_status(config, out=out, width=WIDTH) == 0
    text = out.getvalue()
    (fingerprint,) = fingerprints()
    for name in nodes.names:
        url = re.escape(nodes.urls[name])
        row = rf"│ {name} +│ {url} │ up +│ alive@\d+ │ +2 │ +6 │ +0 │ .* │ {fingerprint[:12]} │"
        assert any(re.fullmatch(row, line.rstrip()) for line in text.splitlines()), (name, text)
    matrix = [line for line in text.splitlines() if re.match(r"│ n\d +│ alive +│", line)]
    assert [re.sub(r"\s+", " ", line.rstrip()) for line in matrix] == [
        f"│ {name} │ alive │ alive │ alive │" for name in nodes.names
    ], text
    assert text.splitlines()[-1] == "agree: yes, all 3 nodes hold the same state"

    assert main(["status", "--config", str(nodes.config), "--json"]) == 0
    answer = orjson.loads(capsys.readouterr().out)
    assert answer["agree"] is True and answer["exit_status"] == 0
    assert [(n["name"], n["up"], n["likes"], n["behind"]) for n in answer["nodes"]] == [
        (name, True, 6, 0) for name in nodes.names
    ]
    assert all(n["members"] == dict.fromkeys(nodes.names, "alive") for n in answer["nodes"])

    nodes.kill("n3")
    nodes.eventually(
        lambda: all(
            {m["name"]: m["state"] for m in nodes.call(o, "GET", "/v1/cluster")["members"]}["n3"] == "dead"
            for o in ("n1", "n2")
        ),
        "n1 and n2 see n3 dead",
    )
    out = io.StringIO()
    assert report_status(config, out=out, width=WIDTH) == 1
    text = out.getvalue()
    assert re.search(r"│ n3 +│ \S+ +│ DOWN │", text), text
    matrix = [
        re.sub(r"\s+", " ", line.rstrip()) for line in text.splitlines() if re.match(r"│ n\d +│ \S+ +│", line)
    ]
    assert matrix[-3:] == [
        "│ n1 │ alive │ alive │ dead │",
        "│ n2 │ alive │ alive │ dead │",
        "│ n3 │ ? │ ? │ ? │",
    ]
    assert "n3 is down: unreachable" in text
    assert text.splitlines()[-1] == "agree: yes among the 2 reachable node(s); 1 unreachable"
