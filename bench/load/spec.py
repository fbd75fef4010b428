"""What a load offers (``LoadSpec``), its bounds, and the histograms its latencies go into."""

from __future__ import annotations

import dataclasses
from typing import Literal

from hdrh.histogram import HdrHistogram

#: Users of worker ``w`` are ``user_base + w * USER_STRIDE + i``: distinct while i < USER_STRIDE.
USER_STRIDE = 10**12
#: Histogram range and precision, in microseconds: 1 us to one hour, 3 significant digits.
HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS = 1, 3_600_000_000, 3
#: Shortest sleep of an open-loop schedule, in seconds: requests due meanwhile go out together at
#: most this late, and their latency, counted from when they were due, includes it.
TICK = 0.001
#: Requests one open-loop worker lets be outstanding; past it, sends wait (and their latency shows it).
MAX_IN_FLIGHT = 10_000
#: The error kind of open-loop requests still unsent ``timeout`` seconds after the load should have ended.
NOT_SENT = "not sent: schedule overran"
#: The error kind of requests that found no idle connection to their node within ``timeout``.
NO_CONNECTION = "no free connection within the timeout"
#: The error kind of open-loop requests still waiting for a channel or an answer when the load ends.
ABANDONED = "abandoned: no answer by the end"
#: How long the parent waits for workers to say they are ready (spawned, connections open), in seconds.
READY_TIMEOUT = 60.0
#: The ``counts`` shape expects item k to hold ``k % POPULATED_SPREAD + 1`` likes (see populated_count).
POPULATED_SPREAD = 5
#: An unlike of the ``zipf`` shape targets a like made at least this many requests earlier.
UNLIKE_LAG = 32
#: Requests a ``zipf`` worker may plan (its plan is held in memory).
MAX_PLANNED = 2_000_000
#: Batch templates (``Worker.batch_template``) one worker keeps: one per first item a batch can have.
MAX_BATCH_TEMPLATES = 64
#: Percentiles reported, as (key, percentile).
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p99_9_ms", 99.9))


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    """What to offer, to whom, for how long; ``connections`` and ``rate`` are totals over workers."""

    urls: tuple[str, ...]
    mode: Literal["open", "closed"]
    seconds: float
    rate: float = 0.0
    connections: int = 64
    workers: int = 1
    warmup: float = 1.0
    max_requests: int = 5_000_000
    items: int = 1000
    content_type: str = "bench"
    user_base: int = 0
    #: CPUs the workers are pinned to (None: not pinned).
    cpus: tuple[int, ...] | None = None
    #: Bound on one request, in seconds.
    timeout: float = 10.0
    #: ``raw``: a minimal keep-alive HTTP/1.1 client (cheap); ``aiohttp``: its client session.
    client: Literal["raw", "aiohttp"] = "raw"
    #: What a request is: ``like`` (PUT a new user's like, items in turn); ``zipf`` (a new user's like
    #: of a Zipf-popular item, or with ``unlike_share`` an unlike of an earlier acknowledged like, sent
    #: to the node of the user); ``counts`` (``POST /v1/counts`` of ``per_request`` items populated as
    #: ``populated_count`` says, every answer checked); ``batch`` (``POST /v1/batch`` of
    #: ``per_request`` new users' likes, items in turn).
    shape: Literal["like", "zipf", "counts", "batch"] = "like"
    per_request: int = 1
    unlike_share: float = 0.0
    zipf_exponent: float = 1.0
    #: Item ids are ``item_base + k`` for k below ``items``.
    item_base: int = 0
    #: Seeds the ``zipf`` plan (each worker its own stream).
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("no URL to load")
        if self.client not in ("raw", "aiohttp"):
            raise ValueError(f"client must be raw or aiohttp, not {self.client!r}")
        if self.mode not in ("open", "closed"):
            raise ValueError(f"mode must be open or closed, not {self.mode!r}")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("an open-loop load needs a rate above 0")
        if self.workers < 1 or self.connections < self.workers:
            raise ValueError("need at least one worker and one connection per worker")
        if self.seconds <= 0 or self.warmup < 0 or self.max_requests < self.workers:
            raise ValueError("seconds must be positive, warmup non-negative, max_requests >= workers")
        if self.connections // self.workers < len(self.urls):
            raise ValueError("every worker needs at least one connection per URL")
        if self.shape not in ("like", "zipf", "counts", "batch"):
            raise ValueError(f"unknown request shape {self.shape!r}")
        if self.per_request < 1 or self.items < 1 or not 0.0 <= self.unlike_share <= 0.9:
            raise ValueError("per_request and items must be >= 1, unlike_share within [0, 0.9]")
        planned = self.max_requests
        if self.mode == "open":
            planned = min(planned, int((self.warmup + self.seconds) * self.rate))
        if self.shape == "zipf" and planned > MAX_PLANNED * self.workers:
            raise ValueError(f"a zipf load plans at most {MAX_PLANNED:,} requests per worker")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def latency_summary(histogram: HdrHistogram) -> dict[str, float | int | None]:
    """p50, p90, p99, p99.9, max and mean in milliseconds (None when nothing was recorded)."""
    count = histogram.get_total_count()
    summary: dict[str, float | int | None] = {"count": count}
    for key, percentile in PERCENTILES:
        summary[key] = histogram.get_value_at_percentile(percentile) / 1000 if count else None
    summary["max_ms"] = histogram.get_max_value() / 1000 if count else None
    summary["mean_ms"] = histogram.get_mean_value() / 1000 if count else None
    return summary
