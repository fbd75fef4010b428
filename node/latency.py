"""Latency histograms as plain integers: a bucket count and a sum, updated with one bisect.

The request path and the log's writer thread record here; ``node.metrics`` turns the counts into
Prometheus histograms only when ``/metrics`` is scraped. A ``prometheus_client`` histogram would take a
lock and several calls per observation, a visible share of a like's cost at thousands a second.
Increments from another thread (the log writer) are plain integer stores under the GIL: a scrape may
see an observation's bucket a moment before its sum, never a torn count.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: Bucket upper bounds (seconds) of HTTP request latencies: sub-millisecond likes to slow w=all writes.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Bucket upper bounds (seconds) of log fsyncs and group commits: from a fast SSD to a sick disk.
DISK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LatencyHistogram:
    """Counts of observations per bucket (``le`` bounds, plus one past the last) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        #: counts[i] observations in (bounds[i-1], bounds[i]]; the last entry is past every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """One observation."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """Prometheus' view: (``le`` bound, observations at most that) ending with ``+Inf``, and the sum."""
        counts, total = list(self.counts), self.sum
        buckets: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, total

    @property
    def count(self) -> int:
        """Observations recorded."""
        return sum(self.counts)
