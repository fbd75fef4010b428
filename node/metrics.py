"""The node's Prometheus metrics, in a registry of its own so several nodes can share a process (tests).

Nothing here runs per request except ``count_request`` and ``count_writes``, which bump plain
integers (and one bisect for the latency bucket). Everything else (gossip, members, the log,
checkpoints) is read from the objects that already keep it, by collectors, only when ``/metrics`` is
scraped. Every metric is listed, with its type, labels and meaning, in the README's ``/metrics``
section; ``tests/node/test_metrics.py`` checks the two agree.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gossip.member import MemberInfo, MemberState
from node.checkpoint.checkpointer import LaneStatus
from node.durable.itemstore import ItemStore
from node.durable.loading import StoreLoader
from node.durable.wal import WriteAheadLog
from node.latency import REQUEST_BUCKETS, LatencyHistogram
from node.version import package_version

#: Content type of the Prometheus text exposition format served at ``/metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4"

#: Gossip statistics that are a current value; every other one is a running total (a counter).
GOSSIP_GAUGES = {
    "anti_entropy_keys_indexed": "Items in this node's anti-entropy Merkle index.",
    "health_score": "Lifeguard local health: 0 is healthy; higher stretches probe and repair timers.",
}
#: Gossip statistics left out: ``members_<state>`` counts peers, ``likes_members`` counts every member.
GOSSIP_SKIPPED_PREFIX = "members_"
#: Help of the gossip counters worth explaining; any other is exposed with a generic help.
GOSSIP_HELP = {
    "frames_sent": "Gossip frames sent (one per destination).",
    "bytes_sent": "Gossip bytes sent, every message type.",
    "bytes_sent_deltas": "Gossip bytes sent carrying deltas (pushes and write-level replication).",
    "bytes_sent_anti_entropy": "Gossip bytes sent by anti-entropy (trees, key lists, states).",
    "bytes_sent_membership": "Gossip bytes sent by membership (probes, acks, member lists).",
    "frames_received": "Gossip frames received and authenticated.",
    "bytes_received": "Gossip bytes received in authenticated frames.",
    "frames_rejected": "Gossip frames rejected (bad framing, size or authentication).",
    "frames_rejected_auth": "Gossip frames whose authentication tag did not verify.",
    "frames_dropped": "Gossip frames dropped instead of sent (queue full, peer unreachable, write failed).",
    "frames_oversized": "Gossip messages not sent because they exceeded gossip.max_frame_bytes.",
    "handler_errors": "Gossip messages or loops that raised unexpectedly; should stay zero.",
    "deltas_sent": "Delta items sent to peers (one per item per destination).",
    "deltas_merged": "Delta items received from peers and merged into the store.",
    "deltas_unsent": "Delta items dropped because no peer was live (anti-entropy ships them later).",
    "payload_errors": "Items from peers that failed to decode or merge.",
    "anti_entropy_rounds": "Anti-entropy rounds started with a peer.",
    "anti_entropy_in_sync": "Anti-entropy rounds that found the peer's tree equal to ours.",
    "anti_entropy_keys_repaired": "Items repaired by anti-entropy (full states merged).",
    "anti_entropy_busy": "Anti-entropy rounds sat out because the index was still catching up.",
    "anti_entropy_sweeps": "Rounds with every alive peer at once, started when a burst of changes settled.",
    "anti_entropy_states_oversized": "Item states not shipped by anti-entropy because one exceeds a frame.",
    "anti_entropy_states_deferred": "States over 1 MiB anti-entropy left to deltas while the item changed.",
    "probes": "SWIM probes sent.",
    "probe_failures": "SWIM probes that got no ack, direct or indirect.",
    "members_suspected": "Times a member was marked suspect.",
    "members_declared_dead": "Times a member was declared dead.",
    "members_revived": "Times a member suspected or dead came back alive.",
    "refutations": "Times this node refuted a suspicion of itself.",
    "probe_timer_late": "Probe ticks that fired late (an overloaded event loop).",
    "pings_misdirected": "Pings ignored because they named another member (it moved to this address).",
    "frames_cut": "Gossip frames cut by the test fault injector (a simulated partition); zero in production.",
    "connections_opened": "Gossip TCP connections opened to peers.",
    "connections_refused": "Incoming gossip connections refused (too many open).",
    "connect_failures": "Gossip TCP connection attempts to peers that failed.",
    "replicate_merged": "Items merged from write-level (w=majority|all) replication pushes.",
    "replicate_short": "Write-level pushes that found fewer live peers than copies asked.",
    "replicate_timeouts": "Write-level pushes not confirmed by enough peers in time.",
}


class NodeMetrics:
    """Counters the API updates, plus collectors that read the node's parts at scrape time.

    The per-request counters are plain integers in dicts, turned into Prometheus counters and
    histograms only when scraped: a ``prometheus_client`` child costs a lock and several calls per
    increment, which at thousands of likes a second is a visible share of a like's cost.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: (method, route, status) -> requests answered.
        self.requests: dict[tuple[str, str, int], int] = {}
        #: (method, route) -> latencies of the requests answered.
        self.latency: dict[tuple[str, str], LatencyHistogram] = {}
        #: kind (like, unlike, counter) -> local writes that changed state.
        self.writes: dict[str, int] = {}
        self.internal_errors = Counter(
            "likes_http_internal_errors",
            "Requests that raised an unexpected exception (answered 500); should stay zero.",
            registry=self.registry,
        )
        self.registry.register(_TallyCollector(self))
        self.items = Gauge("likes_items", "Items held by this node.", registry=self.registry)
        # The process as the OS sees it (memory, CPU, descriptors), read from /proc at each scrape.
        ProcessCollector(namespace="likes", registry=self.registry)
        Gauge(
            "likes_build_info",
            "Always 1; its labels name the versions that run.",
            ["version", "python"],
            registry=self.registry,
        ).labels(version=package_version(), python=platform.python_version()).set(1)
        self.likes = Gauge(
            "likes_store_likes",
            "Likes held by this node over every item (local and merged from peers).",
            registry=self.registry,
        )

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request and how long it took."""
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((method, route))
        if histogram is None:
            histogram = self.latency[method, route] = LatencyHistogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def count_writes(self, kind: str, amount: int = 1) -> None:
        """Local writes that changed state, of ``kind`` (like, unlike, counter)."""
        self.writes[kind] = self.writes.get(kind, 0) + amount

    def watch_items(self, count: Callable[[], int]) -> None:
        """Read the item count from ``count`` at each scrape."""
        self.items.set_function(count)

    def watch_likes(self, count: Callable[[], int]) -> None:
        """Read the number of likes held from ``count`` at each scrape."""
        self.likes.set_function(count)

    def watch_gossip(self, stats: Callable[[], Mapping[str, object]]) -> None:
        """Expose gossip's statistics: running totals as ``likes_gossip_<name>_total`` counters,
        current values (``GOSSIP_GAUGES``) as gauges."""
        self.registry.register(_GossipCollector(stats))

    def watch_members(self, members: Callable[[], Iterable[MemberInfo]]) -> None:
        """Expose the members this node sees, per state and one by one."""
        self.registry.register(_MembersCollector(members))

    def watch_log(
        self,
        wal: WriteAheadLog,
        items: ItemStore,
        unflushed: Callable[[], int],
        loader: StoreLoader | None = None,
    ) -> None:
        """Expose the write-ahead log's totals, fsync and group-commit latency histograms, and whether
        it refuses writes; the item store's flushes, size, the items it has yet to hear of, and how
        far a start has read it in."""
        self.registry.register(_LogCollector(wal, items, unflushed, loader))

    def watch_checkpoints(self, lanes: Callable[[], Mapping[str, LaneStatus]]) -> None:
        """Expose each checkpoint sink's lag, backlog, writes and errors (``lanes`` may be empty)."""
        self.registry.register(_CheckpointCollector(lanes))

    def internal_error_count(self) -> float:
        """How many requests were answered 500 (tests assert none)."""
        return self.registry.get_sample_value("likes_http_internal_errors_total") or 0.0

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def _histogram(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=labels)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: LatencyHistogram) -> None:
    buckets, total = histogram.cumulative()
    family.add_metric(labels, [(bound, float(count)) for bound, count in buckets], total)


class _TallyCollector(Collector):
    """The plain-integer request and write tallies, as Prometheus counters and histograms."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # labels appear as requests do

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "likes_http_requests",
            "HTTP requests answered, by method, route and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self._metrics.requests.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = _histogram(
            "likes_http_request_duration_seconds",
            "Time to answer HTTP requests (middleware in to response out), by method and route.",
            ["method", "route"],
        )
        for (method, route), histogram in sorted(self._metrics.latency.items()):
            _add_histogram(latency, [method, route], histogram)
        yield latency
        writes = CounterMetricFamily(
            "likes_writes",
            "Local writes that changed state, by kind: like, unlike, counter (merges from peers excluded).",
            labels=["kind"],
        )
        for kind, count in sorted(self._metrics.writes.items()):
            writes.add_metric([kind], count)
        yield writes


class _GossipCollector(Collector):
    """Turns ``Gossiper.stats()`` into counters and gauges at scrape time."""

    def __init__(self, stats: Callable[[], Mapping[str, object]]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # dynamic names: nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self._stats().items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if name.startswith(GOSSIP_SKIPPED_PREFIX) and name[len(GOSSIP_SKIPPED_PREFIX) :] in _STATES:
                continue
            safe = "".join(c if c.isalnum() else "_" for c in name)
            if name in GOSSIP_GAUGES:
                yield GaugeMetricFamily(f"likes_gossip_{safe}", GOSSIP_GAUGES[name], value=value)
            else:
                help_text = GOSSIP_HELP.get(name, f"Gossip events counted as {name}.")
                yield CounterMetricFamily(f"likes_gossip_{safe}", help_text, value=value)


_STATES = frozenset(state.value for state in MemberState)


class _MembersCollector(Collector):
    """The membership as this node sees it (itself included)."""

    def __init__(self, members: Callable[[], Iterable[MemberInfo]]) -> None:
        self._members = members

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        members = sorted(self._members(), key=lambda m: m.name)
        per_state = GaugeMetricFamily(
            "likes_members", "Members this node sees in each SWIM state, itself included.", labels=["state"]
        )
        for state in MemberState:
            per_state.add_metric([state.value], sum(1 for m in members if m.state is state))
        yield per_state
        one_by_one = GaugeMetricFamily(
            "likes_member_state",
            "1 for the SWIM state this node sees each member in, 0 for the other states.",
            labels=["member", "state"],
        )
        for member in members:
            for state in MemberState:
                one_by_one.add_metric([member.name, state.value], 1 if member.state is state else 0)
        yield one_by_one


class _LogCollector(Collector):
    """The write-ahead log's own counters and latency buckets."""

    def __init__(
        self, wal: WriteAheadLog, items: ItemStore, unflushed: Callable[[], int], loader: StoreLoader | None
    ) -> None:
        self._wal = wal
        self._items = items
        self._unflushed = unflushed
        self._loader = loader

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        wal = self._wal
        yield CounterMetricFamily("likes_wal_records", "Records appended to the log.", wal.records)
        yield CounterMetricFamily(
            "likes_wal_written_bytes", "Bytes written to the write-ahead log.", wal.bytes_written
        )
        yield CounterMetricFamily("likes_wal_fsyncs", "fsync calls of the write-ahead log.", wal.fsyncs)
        items = self._items
        yield CounterMetricFamily(
            "likes_item_store_flushes", "Flushes of changed items to the item store.", items.flushes
        )
        yield CounterMetricFamily(
            "likes_item_store_written_items", "Items written to the item store.", items.items_written
        )
        yield GaugeMetricFamily(
            "likes_item_store_unflushed_items",
            "Items changed since the last flush to the item store (what the next one writes).",
            value=self._unflushed(),
        )
        yield GaugeMetricFamily(
            "likes_item_store_bytes", "Bytes of the item store on disk.", value=items.size_bytes()
        )
        loader = self._loader
        yield GaugeMetricFamily(
            "likes_item_store_loading",
            "1 while the node still reads its item store in (it serves meanwhile, not ready), else 0.",
            value=0 if loader is None or loader.done else 1,
        )
        yield GaugeMetricFamily(
            "likes_item_store_loaded_items",
            "Items read in from the item store since start.",
            value=0 if loader is None else loader.loaded,
        )
        # Alert on the gauge; the counters show a disk that fails and recovers between two scrapes.
        yield GaugeMetricFamily(
            "likes_wal_failed",
            "1 while the write-ahead log refuses writes (a write or fsync failed), 0 while it takes them.",
            value=0 if wal.failure is None else 1,
        )
        yield CounterMetricFamily(
            "likes_wal_failures", "Times the write-ahead log failed and began refusing writes.", wal.failures
        )
        yield CounterMetricFamily(
            "likes_wal_recoveries",
            "Times the write-ahead log took writes again after failing.",
            wal.recoveries,
        )
        fsync = _histogram("likes_wal_fsync_seconds", "Duration of each log fsync (the disk's part).", [])
        _add_histogram(fsync, [], wal.fsync_latency)
        yield fsync
        commit = _histogram(
            "likes_wal_commit_seconds",
            "Group commit latency: a record's append to its being durable (write, fsync, hand-offs).",
            [],
        )
        _add_histogram(commit, [], wal.commit_latency)
        yield commit


class _CheckpointCollector(Collector):
    """Each sink's lane: lag, backlog, items written, errors, backing off."""

    def __init__(self, lanes: Callable[[], Mapping[str, LaneStatus]]) -> None:
        self._lanes = lanes

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        lanes = sorted(self._lanes().items())
        lag = GaugeMetricFamily(
            "likes_checkpoint_lag_seconds",
            "Age of the oldest change held for an owned item and not yet in the sink (mysql: restorable).",
            labels=["sink"],
        )
        pending = GaugeMetricFamily(
            "likes_checkpoint_pending_items", "Items waiting to be written to the sink.", labels=["sink"]
        )
        written = CounterMetricFamily(
            "likes_checkpoint_written_items", "Item checkpoints written to the sink.", labels=["sink"]
        )
        errors = CounterMetricFamily(
            "likes_checkpoint_errors", "Failed writes to the sink (retried with backoff).", labels=["sink"]
        )
        down = GaugeMetricFamily(
            "likes_checkpoint_down", "1 while the sink fails and is retried with backoff.", labels=["sink"]
        )
        for sink, status in lanes:
            lag.add_metric([sink], status.lag_ms / 1000)
            pending.add_metric([sink], status.pending_items)
            written.add_metric([sink], status.written_items)
            errors.add_metric([sink], status.errors)
            down.add_metric([sink], 1 if status.down else 0)
        yield from (lag, pending, written, errors, down)
