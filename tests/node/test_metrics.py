"""``GET /metrics``: every metric is there under its documented name, type and labels, values move when
likes arrive, and the README's table lists exactly what a node exposes.

Scrapes a real node app (a real log, a real SQLite sink and a Redis sink pointed at a port nobody
listens on: an outage, not a mock), parsed with ``prometheus_client``'s own parser. One test runs two
``likes node`` processes to see gossip's counters move between real peers.
"""

from __future__ import annotations

import asyncio
import platform
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gossip import GossipConfig, Gossiper
from gossip.gossiper import STAT_NAMES
from node.checkpoint import RedisSink, SqliteSink
from node.checkpoint.checkpointer import Checkpointer
from node.http.api import CHECKPOINTER, METRICS, STORE
from node.latency import LatencyHistogram
from node.metrics import GOSSIP_GAUGES, GOSSIP_HELP, NodeMetrics
from node.state.store import LikeStore
from node.version import package_version
from tests.node.conftest import Client, ClientFactory, free_ports, make_app
from tests.node.processes import DIRECT, NodeProcesses

README = Path(__file__).resolve().parents[2] / "README.md"
LIKE = "/v1/items/post/1/likes/{user}"
LIKE_ROUTE = "/v1/items/{type}/{id}/likes/{user}"

#: family name (as the parser names it) -> (type, label names) that a scrape must show.
EXPECTED = {
    "likes_http_requests": ("counter", {"method", "route", "status"}),
    "likes_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "likes_http_internal_errors": ("counter", set()),
    "likes_writes": ("counter", {"kind"}),
    "likes_items": ("gauge", set()),
    "likes_build_info": ("gauge", {"version", "python"}),
    "likes_process_resident_memory_bytes": ("gauge", set()),
    "likes_process_cpu_seconds": ("counter", set()),
    "likes_process_open_fds": ("gauge", set()),
    "likes_store_likes": ("gauge", set()),
    "likes_members": ("gauge", {"state"}),
    "likes_member_state": ("gauge", {"member", "state"}),
    "likes_wal_records": ("counter", set()),
    "likes_wal_written_bytes": ("counter", set()),
    "likes_wal_fsyncs": ("counter", set()),
    "likes_item_store_flushes": ("counter", set()),
    "likes_item_store_written_items": ("counter", set()),
    "likes_item_store_unflushed_items": ("gauge", set()),
    "likes_item_store_bytes": ("gauge", set()),
    "likes_item_store_loading": ("gauge", set()),
    "likes_item_store_loaded_items": ("gauge", set()),
    "likes_wal_failed": ("gauge", set()),
    "likes_wal_failures": ("counter", set()),
    "likes_wal_recoveries": ("counter", set()),
    "likes_wal_fsync_seconds": ("histogram", set()),
    "likes_wal_commit_seconds": ("histogram", set()),
    "likes_checkpoint_lag_seconds": ("gauge", {"sink"}),
    "likes_checkpoint_pending_items": ("gauge", {"sink"}),
    "likes_checkpoint_written_items": ("counter", {"sink"}),
    "likes_checkpoint_errors": ("counter", {"sink"}),
    "likes_checkpoint_down": ("gauge", {"sink"}),
    "likes_gossip_frames_sent": ("counter", set()),
}


class Scrape:
    """One parsed exposition: families by name, and sample lookup by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def labels(self, family: str) -> set[str]:
        return {k for s in self.families[family].samples for k in s.labels if k != "le"}

    def samples(self, family: str) -> list[Sample]:
        return self.families[family].samples

    def value(self, sample: str, **labels: str) -> float:
        """The value of the one sample named ``sample`` with exactly ``labels`` (0 when absent)."""
        family = re.sub(r"_(total|bucket|count|sum)$", "", sample)
        samples = self.families[family].samples if family in self.families else []
        found = [s.value for s in samples if s.name == sample and s.labels == labels]
        assert len(found) <= 1, (sample, labels)
        return found[0] if found else 0.0


async def scrape(client: Client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(await response.text())


@pytest.fixture
async def node(aiohttp_client: ClientFactory, tmp_path: Path) -> AsyncIterator[Client]:
    """A node app with two checkpoint sinks: SQLite (works) and Redis at a closed port (down)."""
    app = make_app(tmp_path)
    dead_port = free_ports(1)[0]
    app[CHECKPOINTER] = Checkpointer(
        app[STORE],
        [
            SqliteSink(tmp_path / "checkpoint.sqlite", timeout=2.0),
            RedisSink(f"redis://127.0.0.1:{dead_port}/0", timeout=0.5),
        ],
        me="n1",
        live_members=lambda: ["n1"],
        interval=3600.0,  # ticked by the test only
        batch_items=100,
        max_backoff=1.0,
        takeover_delay=0.0,
    )
    client = await aiohttp_client(app)
    yield client
    await app[CHECKPOINTER].close()
    assert app[METRICS].internal_error_count() == 0, "a request was answered 500"


async def test_every_metric_has_its_name_type_and_labels(node: Client) -> None:
    await node.put(LIKE.format(user=1))
    await node.app[CHECKPOINTER].tick(force=True)
    found = await scrape(node)
    for name, (kind, labels) in EXPECTED.items():
        assert name in found.families, f"{name} missing"
        assert found.families[name].type == kind, name
        assert found.labels(name) == labels, name
    assert all(name.startswith("likes_") for name in found.families)
    assert {s.labels["sink"] for s in found.samples("likes_checkpoint_lag_seconds")} == {"sqlite", "redis"}
    states = {(s.labels["member"], s.labels["state"]): s.value for s in found.samples("likes_member_state")}
    assert states == {("n1", "alive"): 1, ("n1", "suspect"): 0, ("n1", "dead"): 0}
    versions = {"version": package_version(), "python": platform.python_version()}
    assert found.value("likes_build_info", **versions) == 1
    assert found.value("likes_process_resident_memory_bytes") > 1 << 20
    assert (
        found.value("likes_members", state="alive") == 1 and found.value("likes_members", state="dead") == 0
    )


async def test_values_move_after_likes(node: Client) -> None:
    before = await scrape(node)
    for user in (1, 2, 2):  # the retry of user 2 changes nothing
        assert (await node.put(LIKE.format(user=user))).status == 200
    batch = {"ops": [{"op": "like", "type": "post", "id": 2, "user": u} for u in (1, 2, 3)]}
    assert (await node.post("/v1/batch", json=batch)).status == 200
    assert (await node.delete(LIKE.format(user=1))).status == 200
    after = await scrape(node)

    def moved(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert moved("likes_writes_total", kind="like") == 5
    assert moved("likes_writes_total", kind="unlike") == 1
    put = {"method": "PUT", "route": LIKE_ROUTE}
    assert moved("likes_http_requests_total", **put, status="200") == 3
    assert moved("likes_http_request_duration_seconds_count", **put) == 3
    assert moved("likes_http_request_duration_seconds_bucket", **put, le="+Inf") == 3
    assert moved("likes_http_request_duration_seconds_sum", **put) > 0
    assert after.value("likes_items") == 2 and after.value("likes_store_likes") == 4
    assert moved("likes_wal_records_total") == 4  # one per write request that changed something
    assert moved("likes_wal_fsyncs_total") >= 1 and moved("likes_wal_written_bytes_total") > 0
    assert moved("likes_wal_fsync_seconds_count") == moved("likes_wal_fsyncs_total")
    assert moved("likes_wal_commit_seconds_count") >= 1
    assert moved("likes_wal_fsync_seconds_sum") > 0


async def test_histogram_buckets_are_cumulative_and_end_at_the_count(node: Client) -> None:
    for user in range(5):
        await node.put(LIKE.format(user=user))
    found = await scrape(node)
    for family in (
        "likes_http_request_duration_seconds",
        "likes_wal_fsync_seconds",
        "likes_wal_commit_seconds",
    ):
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for s in found.samples(family):
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                counts[key] = s.value
        assert series, family
        for key, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            assert values == sorted(values), (family, key)
            assert sorted(buckets)[-1] == (float("inf"), counts[key]), (family, key)


async def test_checkpoint_lag_and_errors_per_sink(node: Client) -> None:
    before = await scrape(node)
    assert before.value("likes_checkpoint_pending_items", sink="redis") == 0
    await node.put(LIKE.format(user=1))
    await node.app[CHECKPOINTER].tick()  # SQLite takes the change; Redis is down and keeps it
    await asyncio.sleep(0.05)
    found = await scrape(node)
    assert found.value("likes_checkpoint_written_items_total", sink="sqlite") == 1
    assert found.value("likes_checkpoint_pending_items", sink="sqlite") == 0
    assert found.value("likes_checkpoint_lag_seconds", sink="sqlite") == 0
    assert found.value("likes_checkpoint_errors_total", sink="sqlite") == 0
    assert found.value("likes_checkpoint_down", sink="sqlite") == 0
    assert found.value("likes_checkpoint_written_items_total", sink="redis") == 0
    assert found.value("likes_checkpoint_pending_items", sink="redis") == 1
    assert found.value("likes_checkpoint_lag_seconds", sink="redis") >= 0.05
    assert found.value("likes_checkpoint_errors_total", sink="redis") == 1
    assert found.value("likes_checkpoint_down", sink="redis") == 1


def gossiper_stats() -> dict[str, int]:
    """A real (unstarted) gossiper's statistics, with every counter the transports may add."""
    config = GossipConfig(name="n1", host="127.0.0.1", port=free_ports(1)[0], keyring=(b"k" * 32,))
    stats = Gossiper(config, LikeStore("n1-0123456789abcdef.1")).stats()
    return {**dict.fromkeys(GOSSIP_HELP, 0), **stats}


def test_gossip_totals_are_counters_and_current_values_gauges() -> None:
    metrics = NodeMetrics()
    metrics.watch_gossip(gossiper_stats)
    found = Scrape(metrics.render().decode())
    assert set(STAT_NAMES) <= set(GOSSIP_HELP), "a gossip counter without its help text"
    for name in GOSSIP_HELP:
        family = found.families[f"likes_gossip_{name}"]
        assert family.type == "counter" and family.documentation == GOSSIP_HELP[name], name
    for name, help_text in GOSSIP_GAUGES.items():
        assert found.families[f"likes_gossip_{name}"].type == "gauge"
        assert found.families[f"likes_gossip_{name}"].documentation == help_text
    for state in ("alive", "suspect", "dead"):  # gauges of peers per state: likes_members counts them all
        assert f"likes_gossip_members_{state}" not in found.families


def test_latency_histogram_buckets_by_upper_bound() -> None:
    histogram = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(seconds)
    buckets, total = histogram.cumulative()
    assert buckets == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]  # ``le``: a value on a bound is in it
    assert total == pytest.approx(4.65) and histogram.count == 5
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, 0.1))


def documented() -> dict[str, tuple[str, set[str]]]:
    """The README's ``/metrics`` table: exposed name -> (type, label names)."""
    text = README.read_text()
    section = text.split("\n## `/metrics`", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `(likes_[a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (kind, set(re.findall(r"`([a-z_]+)`", labels)))
    return rows


async def test_the_readme_documents_exactly_what_is_exposed(node: Client) -> None:
    await node.put(LIKE.format(user=1))
    await node.app[CHECKPOINTER].tick(force=True)
    gossip = NodeMetrics()
    gossip.watch_gossip(gossiper_stats)
    exposed: dict[str, tuple[str, set[str]]] = {}
    for found in (await scrape(node), Scrape(gossip.render().decode())):
        for name, family in found.families.items():
            if name.endswith("_created"):  # prometheus_client's creation time of a Counter
                continue
            shown = f"{name}_total" if family.type == "counter" else name
            exposed.setdefault(shown, (family.type, found.labels(name)))  # the node's scrape first
    rows = documented()
    assert sorted(set(exposed) - set(rows)) == [], "exposed but not in the README's /metrics table"
    assert sorted(set(rows) - set(exposed)) == [], "in the README's /metrics table but not exposed"
    for name, row in rows.items():
        assert row == exposed[name], name


# -- between real peers ------------------------------------------------------------------------------


def scrape_node(nodes: NodeProcesses, name: str) -> Scrape:
    with DIRECT.open(nodes.urls[name] + "/metrics", timeout=5) as response:
        return Scrape(response.read().decode())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcesses]:
    nodes = NodeProcesses(tmp_path_factory.mktemp("metrics-pair"), ("n1", "n2"))
    try:
        nodes.start_all()
        yield nodes
    finally:
        nodes.stop_all()


@pytest.mark.cluster
def test_gossip_counters_move_between_real_peers(pair: NodeProcesses) -> None:
    before = {name: scrape_node(pair, name) for name in ("n1", "n2")}
    for user in range(20):
        pair.call("n1", "PUT", f"/v1/items/post/7/likes/{user}")
    pair.eventually(lambda: pair.call("n2", "GET", "/v1/items/post/7")["count"] == 20, "n2 has every like")

    def moved(name: str, sample: str, **labels: str) -> float:
        return scrape_node(pair, name).value(sample, **labels) - before[name].value(sample, **labels)

    pair.eventually(lambda: moved("n1", "likes_gossip_deltas_sent_total") >= 1, "n1 sent deltas")
    assert moved("n2", "likes_gossip_deltas_merged_total") >= 1
    assert (
        moved("n1", "likes_gossip_bytes_sent_total") > 0
        and moved("n2", "likes_gossip_bytes_received_total") > 0
    )
    assert moved("n1", "likes_gossip_bytes_sent_deltas_total") > 0
    assert moved("n2", "likes_writes_total", kind="like") == 0  # merged likes are not local writes
    pair.eventually(lambda: scrape_node(pair, "n2").value("likes_store_likes") >= 20, "n2 holds them")
    pair.eventually(lambda: moved("n1", "likes_gossip_anti_entropy_rounds_total") >= 1, "a repair round")
    for name in ("n1", "n2"):
        found = scrape_node(pair, name)
        assert found.value("likes_members", state="alive") == 2
        assert found.value("likes_member_state", member="n1", state="alive") == 1
        assert found.value("likes_checkpoint_errors_total", sink="sqlite") == 0
