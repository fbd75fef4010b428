"""The node's Prometheus metrics, in a registry of its own so several nodes can share a process (tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Content type of the Prometheus text exposition format served at ``/metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4"


class NodeMetrics:
    """Counters the API updates, plus gauges read from the store and gossip at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "likes_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "likes_http_internal_errors",
            "Requests that raised an unexpected exception (answered 500); should stay zero.",
            registry=self.registry,
        )
        self.writes = Counter(
            "likes_writes",
            "Local writes that changed state, by kind (like, unlike, counter).",
            ["kind"],
            registry=self.registry,
        )
        self.items = Gauge("likes_items", "Items held by this node.", registry=self.registry)
        #: Label children already looked up: ``labels()`` costs about as much as a like itself.
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._writes: dict[str, Any] = {}

    def count_request(self, method: str, route: str, status: int) -> None:
        """One answered request."""
        child = self._requests.get((method, route, status))
        if child is None:
            child = self._requests[(method, route, status)] = self.requests.labels(method, route, str(status))
        child.inc()

    def count_writes(self, kind: str, amount: int = 1) -> None:
        """Local writes that changed state, of ``kind`` (like, unlike, counter)."""
        child = self._writes.get(kind)
        if child is None:
            child = self._writes[kind] = self.writes.labels(kind)
        child.inc(amount)

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
