"""The node's Prometheus metrics, in a registry of its own so several nodes can share a process (tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Content type of the Prometheus text exposition format served at ``/metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4"


class NodeMetrics:
    """Counters the API updates, plus gauges read from the store and gossip at scrape time.

    The per-request counters are plain integers in dicts, turned into Prometheus counters only when
    scraped: a ``prometheus_client`` child costs a lock and several calls per increment, which at
    thousands of likes a second is a visible share of a like's cost.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: (method, route, status) -> requests answered.
        self.requests: dict[tuple[str, str, int], int] = {}
        #: kind (like, unlike, counter) -> local writes that changed state.
        self.writes: dict[str, int] = {}
        self.internal_errors = Counter(
            "likes_http_internal_errors",
            "Requests that raised an unexpected exception (answered 500); should stay zero.",
            registry=self.registry,
        )
        self.registry.register(_TallyCollector(self))
        self.items = Gauge("likes_items", "Items held by this node.", registry=self.registry)

    def count_request(self, method: str, route: str, status: int) -> None:
        """One answered request."""
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def count_writes(self, kind: str, amount: int = 1) -> None:
        """Local writes that changed state, of ``kind`` (like, unlike, counter)."""
        self.writes[kind] = self.writes.get(kind, 0) + amount

    def watch_items(self, count: Callable[[], int]) -> None:
        """Read the item count from ``count`` at each scrape."""
        self.items.set_function(count)

    def watch_gossip(self, stats: Callable[[], Mapping[str, object]]) -> None:
        """Expose every numeric gossip statistic as a ``likes_gossip_<name>`` gauge."""
        self.registry.register(_GossipCollector(stats))

    def internal_error_count(self) -> float:
        """How many requests were answered 500 (tests assert none)."""
        return self.registry.get_sample_value("likes_http_internal_errors_total") or 0.0

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _TallyCollector(Collector):
    """The plain-integer request and write tallies, as Prometheus counters at scrape time."""

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
        writes = CounterMetricFamily(
            "likes_writes",
            "Local writes that changed state, by kind (like, unlike, counter).",
            labels=["kind"],
        )
        for kind, count in sorted(self._metrics.writes.items()):
            writes.add_metric([kind], count)
        yield writes


class _GossipCollector(Collector):
    """Turns ``Gossiper.stats()`` into gauges at scrape time."""

    def __init__(self, stats: Callable[[], Mapping[str, object]]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # dynamic names: nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self._stats().items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                safe = "".join(c if c.isalnum() else "_" for c in name)
                yield GaugeMetricFamily(f"likes_gossip_{safe}", f"gossip statistic {name}", value=value)
