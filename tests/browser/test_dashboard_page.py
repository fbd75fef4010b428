"""The dashboard (``GET /dashboard``) in a real chromium against a real 3-node cluster.

What an operator sees on the page served by n1: three members alive in every node's view, every node
up, the charts drawn, and the numbers moving without a reload when likes arrive on every node; and,
on a node of its own, that one whose write-ahead log refuses writes is shown not ready with the reason.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from node.http.api import DURABILITY
from tests.browser.conftest import save_screenshot
from tests.node.processes import NodeProcesses
from tests.node.test_schemathesis import ServedNode

pytestmark = [pytest.mark.cluster, pytest.mark.browser]

#: Likes each node takes in the test, a few a second, so the rate charts have something to draw.
ROUNDS = 8
ROUND_PAUSE = 0.25


def open_dashboard(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url + "/dashboard")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    return page


def local_likes(page: Page, node: str) -> int:
    return int(page.locator(f'#nodes tr[data-node="{node}"] .local-likes').inner_text().replace(",", ""))


def series_max(page: Page, chart: str, node: str) -> float:
    """The largest value the chart draws for ``node`` (-1 while it draws none)."""
    line = page.locator(f'#chart-{chart} path.series[data-series="{node}"]')
    if line.count() == 0:
        return -1.0
    found = line.get_attribute("data-max")
    return float(found) if found not in (None, "null") else -1.0


def test_the_dashboard_shows_three_alive_members_and_moves_live(
    cluster: NodeProcesses, context: BrowserContext
) -> None:
    page = open_dashboard(context, cluster.urls["n1"])
    expect(page.locator("#served-by")).to_have_text("n1")
    expect(page.locator("#alive-count")).to_have_text("3")
    expect(page.locator("#nodes tr[data-node] .state.up")).to_have_count(3)
    expect(page.locator("#members td .state.alive")).to_have_count(9)  # each of 3 nodes sees 3 alive
    expect(page.locator("#agreement")).to_have_attribute("data-agree", "true")

    # The charts are drawn once two samples give rates: one line per node.
    expect(page.locator("#chart-like-rate path.series")).to_have_count(3, timeout=10_000)
    expect(page.locator("#chart-convergence path.series")).to_have_count(1)
    for chart in ("like-rate", "convergence", "gossip", "checkpoint"):  # no fsync yet: no WAL values
        assert int(page.locator(f"#chart-{chart}").get_attribute("data-points") or 0) > 0, chart
    before = {node: local_likes(page, node) for node in cluster.names}

    for round_number in range(ROUNDS):
        for node in cluster.names:
            user = 100 * round_number + int(node[1:])
            cluster.call(node, "PUT", f"/v1/items/post/424242/likes/{user}")
        time.sleep(ROUND_PAUSE)

    for node in cluster.names:
        expect(page.locator(f'#nodes tr[data-node="{node}"] .local-likes')).to_have_text(
            str(before[node] + ROUNDS), timeout=5_000
        )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chart-like-rate path.series')]"
        ".every((line) => Number(line.dataset.max) > 0)",
        timeout=5_000,
    )
    assert all(series_max(page, "like-rate", node) > 0 for node in cluster.names)
    assert series_max(page, "gossip", "n1") > 0
    expect(page.locator("#chart-wal path.series")).not_to_have_count(0)
    expect(page.locator("#agreement")).to_have_attribute("data-agree", "true", timeout=5_000)
    expect(page.locator("#convergence-lag")).to_have_text("0", timeout=5_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # live, no reload
    save_screenshot(page, "dashboard")


def test_a_node_that_stops_answering_is_shown_down(cluster: NodeProcesses, context: BrowserContext) -> None:
    page = open_dashboard(context, cluster.urls["n1"])
    expect(page.locator("#alive-count")).to_have_text("3")
    cluster.pause("n3")
    try:
        expect(page.locator('#nodes tr[data-node="n3"] .state.down')).to_have_count(1, timeout=10_000)
        expect(page.locator("#live")).to_have_attribute("data-state", "live")  # n1 still answers
        expect(page.locator("#alive-count")).not_to_have_text("3", timeout=10_000)  # n1's view drops n3
    finally:
        cluster.resume("n3")
    expect(page.locator('#nodes tr[data-node="n3"] .state.up')).to_have_count(1, timeout=10_000)
    expect(page.locator("#alive-count")).to_have_text("3", timeout=15_000)


def test_a_node_whose_log_failed_is_shown_not_ready_with_the_reason(
    context: BrowserContext, tmp_path: Path
) -> None:
    served = ServedNode(tmp_path)  # a node app of its own, whose log the test can fail
    try:
        assert served.app is not None
        wal = served.app[DURABILITY].wal
        page = open_dashboard(context, served.url)
        status = page.locator('#nodes tr[data-node="n1"] td').nth(1)
        expect(status.locator(".state.up")).to_have_count(1)
        expect(page.locator("#alerts")).to_be_hidden()

        reason = "the write-ahead log failed: [Errno 28] No space left on device"
        wal.failure, wal.failed_since, wal.failures = reason, time.time(), 1  # as a failed fsync leaves it
        expect(status.locator(".state.not-ready")).to_have_text("not ready")
        expect(status.locator(".reason")).to_contain_text("refusing writes since ")
        expect(status.locator(".reason")).to_contain_text(reason)
        expect(page.locator('#members tr[data-node="n1"] th .state.not-ready')).to_have_count(1)
        expect(page.locator("#alerts .alert")).to_have_text(
            re.compile(rf"^n1 is not ready: .*{re.escape(reason)}$")
        )
        save_screenshot(page, "dashboard-not-ready")

        wal.failure, wal.failed_since, wal.recoveries = None, None, 1  # as a successful probe leaves it
        expect(status.locator(".state.up")).to_have_count(1)
        expect(status.locator(".reason")).to_have_count(0)
        expect(page.locator("#alerts")).to_be_hidden()
    finally:
        served.stop()
