"""Load generation for like throughput and latency: separate processes, keep-alive HTTP, HDR histograms.

Two modes, both sending requests of one shape (``LoadSpec.shape``) spread over a list of base URLs:
``like`` (``PUT /v1/items/{type}/{id}/likes/{user}``, the default), ``zipf`` (likes of Zipf-popular
items and unlikes of earlier likes), ``counts`` (``POST /v1/counts``) or ``batch`` (``POST /v1/batch``):

- **closed loop** (``mode="closed"``): ``connections`` requests are always outstanding; each answer
  sends the next one. This finds the maximum rate a system sustains; latency is answer time minus
  send time, so it includes the queueing that concurrency causes.
- **open loop** (``mode="open"``): requests are scheduled at a fixed offered ``rate`` whatever the
  answers do, and latency runs from each request's *intended* send time, not from when it was
  actually sent. A server (or client) stall therefore shows up in the percentiles instead of
  silently pausing the clock ("coordinated omission").

Each worker is its own process (``spawn``: no copy of the caller's loop or state), optionally pinned
to given CPUs, running uvloop, with its keep-alive connections opened before the clock starts. The
client is ``raw`` by default: a minimal HTTP/1.1 client (one request at a time per connection, no
pipelining, curl's headers) because ``aiohttp``'s client costs more CPU per request than the no-op
server it loads (measured here: about 155 us against 140 us; the raw client about 65 us), so one
load core could not saturate one server core and every system would look as fast as the client.
``client="aiohttp"`` uses an ``aiohttp`` session instead, for cross-checks.

Latencies go into an ``HdrHistogram`` (microseconds, 3 significant digits) per worker; the parent
merges them. A warm-up period runs the same load but records nothing. Every worker is bounded in
time (``warmup + seconds``, then at most ``timeout`` for the last answers) and in count
(``max_requests`` over all workers). Users are distinct per request (``user_base + worker *
USER_STRIDE + i``), so every like is new work for the server; items cycle over ``items`` ids.

An open-loop load that falls ``timeout`` seconds behind its schedule stops sending: the requests
left count as errors (``NOT_SENT``), as do those still unanswered when it ends (``ABANDONED``).

Each worker also tallies, per item, the net count change its answers acknowledged (``changed``) and
the write operations whose request failed: what the servers must hold afterwards, to the operation.

Errors are counted by kind: ``http <status>`` or the exception's class name. A 200 whose body does
not say ``changed: true`` counts as ``unchanged``: with distinct users it means the server did not
do the work it was asked to.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import multiprocessing
import os
import queue
import random
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import orjson
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
#: Batch templates (``_Worker.batch_template``) one worker keeps: one per first item a batch can have.
MAX_BATCH_TEMPLATES = 64
#: Percentiles reported, as (key, percentile).
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p99_9_ms", 99.9))

_T = TypeVar("_T")


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


def run_async(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run on uvloop when installed: the cheapest client loop leaves the most CPU to measure with."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


# -- one worker process ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tally:
    """What one worker saw inside the measured window (warm-up excluded) and in all."""

    histogram: HdrHistogram = dataclasses.field(default_factory=new_histogram)
    #: Latencies (microseconds) not yet in ``histogram``.
    latencies: array[int] = dataclasses.field(default_factory=lambda: array("q"))
    sent: int = 0
    measured: int = 0
    ok: int = 0
    unchanged: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    last_done: float = 0.0
    #: Answers saying ``changed: true``, warm-up included: what the server must now hold.
    changes_acked: int = 0
    #: Operations (likes, unlikes, items counted) in the measured window's successful requests.
    ops_ok: int = 0
    #: Per item id, the net count change acknowledged (warm-up included): the state to expect.
    expected: Counter[int] = dataclasses.field(default_factory=Counter)
    #: Open loop: requests never sent because the schedule was past its bound (see ``NOT_SENT``).
    sent_not: int = 0
    #: Per item id, write operations whose request failed: each may or may not have been applied.
    uncertain: Counter[int] = dataclasses.field(default_factory=Counter)

    def recorded(self) -> HdrHistogram:
        """The histogram, with every latency collected so far in it."""
        for value in self.latencies:
            self.histogram.record_value(value)
        self.latencies = array("q")
        return self.histogram


JSON_HEADERS = {"Content-Type": "application/json"}


class _AiohttpChannel:
    """One connection's worth of an ``aiohttp`` session (the session's pool holds the sockets)."""

    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client = client
        self.url = url

    async def open(self) -> None:
        async with self.client.get(f"{self.url}/healthz") as response:
            await response.read()

    async def send(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        headers = JSON_HEADERS if body else None
        async with self.client.request(
            method.decode(), self.url + path, data=body or None, headers=headers
        ) as response:
            return response.status, await response.read()

    def expire(self, now: float, timeout: float) -> None:
        """aiohttp enforces its own timeout."""

    def close(self) -> None:
        """The session closes the sockets."""


class _RawChannel(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this load: a
    pre-built request head, one request at a time (no pipelining), and a response read by its
    ``Content-Length``. It costs the client several times less CPU per request than ``aiohttp``'s
    client, which matters when one load core must outrun one server core. A broken or timed-out
    connection fails its request and is opened again for the next one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.path not in ("", "/"):
            raise ValueError(f"the raw client speaks plain http to a host:port, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        # The headers curl sends: a realistic minimum, the same for every system measured.
        self.head = (
            f" HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: likes-bench/1\r\nAccept: */*\r\n"
        ).encode()
        self.empty = self.head + b"Content-Length: 0\r\n\r\n"
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: Hears how the request in flight ended: ``(status, body)`` or the exception that ended it.
        self.answer: Callable[[Outcome], None] | None = None
        self.sent_at = 0.0
        self.timeout = 10.0

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.buffer.clear()
        async with asyncio.timeout(self.timeout):
            await loop.create_connection(lambda: self, self.host, self.port)

    def submit(self, method: bytes, path: str, body: bytes, answer: Callable[[Outcome], None]) -> None:
        """Write a request on the open connection; ``answer`` hears how it ended (from a callback:
        no task or future per request, which is most of what an open-loop client spends)."""
        assert self.transport is not None
        self.answer = answer
        self.sent_at = time.monotonic()
        start = method + b" " + path.encode()
        if body:
            length = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.transport.write(start + self.head + length + body)
        else:
            self.transport.write(start + self.empty)

    async def send(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        if not self.usable:
            await self.open()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def answer(outcome: Outcome) -> None:
            if not future.done():  # not cancelled meanwhile
                future.set_result(outcome)

        self.submit(method, path, body, answer)
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _finish(self, outcome: Outcome) -> None:
        answer, self.answer = self.answer, None
        if answer is not None:
            answer(outcome)

    def expire(self, now: float, timeout: float) -> None:
        """Fail a request outstanding for longer than ``timeout`` and drop its connection."""
        if self.answer is not None and now - self.sent_at > timeout:
            if self.transport is not None:
                self.transport.abort()
            self._finish(TimeoutError(f"no answer within {timeout} s"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._finish(ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answer is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            if self.transport is not None:
                self.transport.abort()
            self._finish(ValueError("a response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < total:
            return
        status, body = int(self.buffer[9:12]), bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self._finish((status, body))


#: How a raw request ended: ``(status, body)``, or the exception that ended it.
Outcome = tuple[int, bytes] | BaseException


Channel = _AiohttpChannel | _RawChannel


def populated_count(item: int) -> int:
    """How many likes the ``counts`` shape expects item ``item`` (an offset from ``item_base``) to
    hold: the caller populates them so before the load, and every answer is checked against it."""
    return item % POPULATED_SPREAD + 1


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """One request of the load: where it goes, what it carries, what it writes, what it waits for."""

    url: int
    method: bytes
    path: str
    body: bytes
    #: The item ids each write operation touches, with +1 (like) or -1 (unlike); empty for reads.
    writes: tuple[tuple[int, int], ...]
    #: Index of an earlier request of this worker that must be answered first (an unlike's like).
    after: int | None = None


class ZipfPlan:
    """One worker's likes and unlikes over Zipf-popular items, decided before the clock starts.

    Every like is by a new user, so each (user, item) pair is liked once; a share of the requests
    unlike a like made at least ``UNLIKE_LAG`` requests earlier, and is sent only once that like is
    answered and to the same node (users are routed by id), so the unlike always observes it. The
    final state is therefore known: likes minus unlikes per item (``planned``)."""

    def __init__(self, spec: LoadSpec, index: int, count: int, user0: int) -> None:
        rng = random.Random(spec.seed * 1_000_003 + index)
        weights = [1.0 / (rank + 1) ** spec.zipf_exponent for rank in range(spec.items)]
        ranks = rng.choices(range(spec.items), cum_weights=list(itertools.accumulate(weights)), k=count)
        self.items: list[int] = []
        self.users: list[int] = []
        self.after: dict[int, int] = {}
        self.planned: Counter[int] = Counter()
        eligible: list[int] = []
        next_eligible = 0
        likes: list[int] = []
        for i in range(count):
            while next_eligible < len(likes) and likes[next_eligible] <= i - UNLIKE_LAG:
                eligible.append(likes[next_eligible])
                next_eligible += 1
            if eligible and rng.random() < spec.unlike_share:
                at = rng.randrange(len(eligible))
                target = eligible[at]
                eligible[at] = eligible[-1]
                eligible.pop()
                self.after[i] = target
                self.items.append(self.items[target])
                self.users.append(self.users[target])
                self.planned[self.items[target]] -= 1
            else:
                item = spec.item_base + ranks[i]
                self.items.append(item)
                self.users.append(user0 + i)
                self.planned[item] += 1
                likes.append(i)
        self.unlikes = len(self.after)
        self.likes = count - self.unlikes
        self.targets = frozenset(self.after.values())


class _Worker:
    """One process's share of a ``LoadSpec``: its connections spread over the URLs (connection j to
    URL (j + worker) mod n), and each request sent on an idle connection to the URL it is for."""

    def __init__(self, spec: LoadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.connections = spec.connections // spec.workers + (index < spec.connections % spec.workers)
        self.request_bound = spec.max_requests // spec.workers + (index < spec.max_requests % spec.workers)
        self.budget = self.request_bound
        if spec.mode == "open":
            self.budget = min(self.budget, int((spec.warmup + spec.seconds) * spec.rate / spec.workers))
        self.user0 = spec.user_base + index * USER_STRIDE
        self.tally = _Tally()
        self.measure_from = 0.0
        self.stop_at = 0.0
        self.idle: list[asyncio.Queue[Channel]] = []
        self.answered: dict[int, asyncio.Event] = {}
        self.zipf = ZipfPlan(spec, index, self.budget, self.user0) if spec.shape == "zipf" else None
        self.reads: list[tuple[bytes, list[int]]] = self._read_bodies() if spec.shape == "counts" else []
        self.batch_templates: dict[int, tuple[list[bytes], tuple[tuple[int, int], ...]]] = {}
        #: The raw client's open loop (``_Dispatch``), set up with the connections.
        self.dispatch: _Dispatch | None = None
        #: Open loop: how late, at worst, a request was sent after it fell due (seconds).
        self.worst_late = 0.0

    def _read_bodies(self) -> list[tuple[bytes, list[int]]]:
        """Every distinct ``POST /v1/counts`` body of this load, with the counts it must get back."""
        spec, bodies = self.spec, []
        for start in range(0, spec.items, spec.per_request):
            offsets = [(start + j) % spec.items for j in range(spec.per_request)]
            refs = [{"type": spec.content_type, "id": spec.item_base + k} for k in offsets]
            bodies.append((orjson.dumps({"items": refs}), [populated_count(k) for k in offsets]))
        return bodies

    def request_of(self, i: int) -> _Request:
        """The i-th request of this worker."""
        spec = self.spec
        urls = len(spec.urls)
        if spec.shape == "like":
            item = spec.item_base + (i * spec.workers + self.index) % spec.items
            path = f"/v1/items/{spec.content_type}/{item}/likes/{self.user0 + i}"
            return _Request((i + self.index) % urls, b"PUT", path, b"", ((item, 1),))
        if spec.shape == "zipf":
            assert self.zipf is not None
            item, user = self.zipf.items[i], self.zipf.users[i]
            after = self.zipf.after.get(i)
            path = f"/v1/items/{spec.content_type}/{item}/likes/{user}"
            method, sign = (b"PUT", 1) if after is None else (b"DELETE", -1)
            return _Request(user % urls, method, path, b"", ((item, sign),), after)
        if spec.shape == "counts":
            body, _ = self.reads[(i * spec.workers + self.index) % len(self.reads)]
            return _Request((i + self.index) % urls, b"POST", "/v1/counts", body, ())
        heads, writes = self.batch_template((i * spec.workers + self.index) * spec.per_request % spec.items)
        user = self.user0 + i * spec.per_request
        users = map(b"%d}".__mod__, range(user, user + spec.per_request))
        ops = b",".join(map(bytes.__add__, heads, users))
        return _Request((i + self.index) % urls, b"POST", "/v1/batch", b'{"ops":[' + ops + b"]}", writes)

    def batch_template(self, offset: int) -> tuple[list[bytes], tuple[tuple[int, int], ...]]:
        """The ops of a batch whose first item is ``offset`` (after ``item_base``), each up to its user
        (``{"op":"like","type":...,"id":...,"user":``), and the batch's writes: the same for every
        batch starting there, so made once (a few kept), and a request costs the load generator
        little more than writing its users."""
        template = self.batch_templates.get(offset)
        if template is None:
            spec = self.spec
            items = [spec.item_base + (offset + j) % spec.items for j in range(spec.per_request)]
            name = spec.content_type.encode()
            heads = [b'{"op":"like","type":"%s","id":%d,"user":' % (name, item) for item in items]
            template = heads, tuple((item, 1) for item in items)
            if len(self.batch_templates) < MAX_BATCH_TEMPLATES:
                self.batch_templates[offset] = template
        return template

    def judge(self, i: int, request: _Request, body: bytes) -> tuple[str | None, int, int]:
        """(error, operations done, operations that changed nothing) of a 200 answer to ``request``."""
        try:
            answer = orjson.loads(body)
            if self.spec.shape == "counts":
                counts = self.reads[(i * self.spec.workers + self.index) % len(self.reads)][1]
                return (None if answer["counts"] == counts else "wrong counts"), len(counts), 0
            results = answer["results"] if self.spec.shape == "batch" else [answer]
            if len(results) != len(request.writes):
                return "bad body", 0, 0
            if self.spec.shape == "batch" and all(result["changed"] is True for result in results):
                self.tally.expected.update(item for item, _ in request.writes)  # a batch's ops all like
                self.tally.changes_acked += len(results)
                return None, len(results), 0
            unchanged = 0
            expected = self.tally.expected
            for (item, sign), result in zip(request.writes, results, strict=True):
                if result["changed"] is True:
                    expected[item] += sign
                    self.tally.changes_acked += 1
                else:
                    unchanged += 1
            return None, len(results), unchanged
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return "bad body", 0, 0

    async def request(self, i: int, intended: float) -> None:
        """Send request i; record its latency from ``intended`` if that lies in the measured window."""
        tally = self.tally
        request = self.request_of(i)
        measured = intended >= self.measure_from
        idle = self.idle[request.url]
        try:
            if request.after is not None:
                await self.answered[request.after].wait()  # bounded: that request is bounded by the timeout
            channel = idle.get_nowait() if not idle.empty() else await self.wait_for_channel(idle, intended)
        except asyncio.CancelledError:
            self.abandon(request, measured, sent=False)
            raise
        if channel is None:  # never sent: it changed nothing
            self.not_sent(measured)
            return
        tally.sent += 1
        outcome: Outcome
        try:
            outcome = await channel.send(request.method, request.path, request.body)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            outcome = exc
        except asyncio.CancelledError:
            channel.close()  # its answer may still come: the connection must not serve another request
            self.abandon(request, measured, sent=True)
            raise
        finally:
            idle.put_nowait(channel)
            if self.zipf is not None and i in self.zipf.targets:
                self.answered[i].set()
        self.record(i, request, intended, outcome)

    def record(self, i: int, request: _Request, intended: float, outcome: Outcome) -> None:
        """Count how request i ended; its latency runs from ``intended`` (if in the measured window)."""
        done = time.monotonic()
        tally = self.tally
        error: str | None
        if isinstance(outcome, BaseException):
            body, error = b"", type(outcome).__name__
        else:
            status, body = outcome
            error = None if status == 200 else f"http {status}"
        ops = unchanged = 0
        if error is None:
            error, ops, unchanged = self.judge(i, request, body)
        if error is not None:
            for item, _ in request.writes:
                tally.uncertain[item] += 1
        if intended < self.measure_from:
            return
        tally.measured += 1
        if error is not None:
            tally.errors[error] += 1
            return
        tally.ok += 1
        tally.ops_ok += ops
        tally.unchanged += unchanged
        tally.last_done = max(tally.last_done, done)
        # Into the histogram after the load: recording costs the client CPU while it matters most.
        tally.latencies.append(max(HIST_LOWEST_US, round((done - intended) * 1e6)))

    def not_sent(self, measured: bool) -> None:
        """Count a request that found no idle connection within the timeout (it changed nothing)."""
        if measured:
            self.tally.measured += 1
            self.tally.errors[NO_CONNECTION] += 1

    async def wait_for_channel(self, idle: asyncio.Queue[Channel], intended: float) -> Channel | None:
        """An idle connection, or None if none frees up within ``timeout`` of the intended send time:
        an open-loop request queued behind a stalled node fails like one sent to it."""
        try:
            async with asyncio.timeout(max(0.0, intended + self.spec.timeout - time.monotonic())):
                return await idle.get()
        except TimeoutError:
            return None

    def abandon(self, request: _Request, measured: bool, *, sent: bool) -> None:
        """Count a request cut off at the end of an overrun load; one sent may have been applied."""
        if sent:
            for item, _ in request.writes:
                self.tally.uncertain[item] += 1
        if measured:
            self.tally.measured += 1
            self.tally.errors[ABANDONED] += 1

    async def closed_loop(self) -> None:
        """``connections`` loops, each sending the next request when its last one is answered."""
        next_index = 0

        async def loop() -> None:
            nonlocal next_index
            while next_index < self.budget:
                sent = time.monotonic()
                if sent >= self.stop_at:
                    return
                i, next_index = next_index, next_index + 1
                await self.request(i, sent)

        await asyncio.gather(*(loop() for _ in range(self.connections)))

    async def open_loop(self, start: float) -> float:
        """Send each request as it falls due (``schedule``), waiting for an idle connection when all
        are busy. Returns how late, at worst, a request was started (seconds)."""
        if self.dispatch is not None:
            return await self.dispatch.run(start)
        in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def send(i: int, due: float) -> None:
            try:
                await self.request(i, due)
            finally:
                in_flight.release()

        async for k, due in self.schedule(start):
            await in_flight.acquire()
            task = asyncio.create_task(send(k, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=self.spec.timeout * 2 + 5.0)
        left = list(tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return self.worst_late

    async def schedule(self, start: float) -> AsyncIterator[tuple[int, float]]:
        """Yield ``(k, due)`` as request k falls due at ``start + (k + phase) / rate``, until the budget
        is spent or the load is ``timeout`` past its end: a generator (or server) that fell that far
        behind has already failed the load, and the run must end within its bound, so the requests
        left count as never sent. ``worst_late`` keeps how late, at worst, one was yielded."""
        spec = self.spec
        rate, phase, total = spec.rate / spec.workers, self.index / spec.workers, self.budget
        give_up = start + spec.warmup + spec.seconds + spec.timeout
        k = 0
        while k < total:
            now = time.monotonic()
            if now > give_up:
                break
            due = start + (k + phase) / rate
            if due > now:
                # Not less than a tick: uvloop's timers have millisecond resolution, and a shorter
                # sleep returns at once, spinning the loop (it took most of a core at 5,000/s).
                await asyncio.sleep(max(due - now, TICK))
                continue
            self.worst_late = max(self.worst_late, now - due)
            while k < total and due <= now:
                yield k, due
                k += 1
                due = start + (k + phase) / rate
        if k < total:
            self.tally.sent_not += total - k
            self.tally.errors[NOT_SENT] += total - k
            self.tally.measured += total - k

    async def run(self, ready: Any, go: Any) -> dict[str, Any]:
        spec = self.spec
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        timeout = aiohttp.ClientTimeout(total=spec.timeout)
        if self.zipf is not None:
            self.answered = {i: asyncio.Event() for i in self.zipf.targets}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as client:
            where = [(j + self.index) % len(spec.urls) for j in range(self.connections)]
            channels: list[Channel] = (
                [_RawChannel(spec.urls[u]) for u in where]
                if spec.client == "raw"
                else [_AiohttpChannel(client, spec.urls[u]) for u in where]
            )
            self.idle = [asyncio.Queue() for _ in spec.urls]
            for u, channel in zip(where, channels, strict=True):
                if isinstance(channel, _RawChannel):
                    channel.timeout = spec.timeout
                self.idle[u].put_nowait(channel)
            if spec.mode == "open" and spec.client == "raw":
                self.dispatch = _Dispatch(self, [cast(_RawChannel, c) for c in channels], where)
            watchdog = asyncio.create_task(self._expire(channels))
            try:
                await asyncio.gather(*(channel.open() for channel in channels))  # a connect is not a like
                ready.set()
                if not await asyncio.to_thread(go.wait, READY_TIMEOUT + 60.0):
                    raise RuntimeError("the harness never said go")
                start = time.monotonic()
                self.measure_from = start + spec.warmup
                self.stop_at = self.measure_from + spec.seconds
                worst_late = None
                if spec.mode == "closed":
                    await self.closed_loop()
                else:
                    worst_late = await self.open_loop(start)
            finally:
                watchdog.cancel()
                for channel in channels:
                    channel.close()
        tally = self.tally
        return {
            "worker": self.index,
            "pid": os.getpid(),
            "sent": tally.sent,
            "not_sent": tally.sent_not,
            "measured": tally.measured,
            "ok": tally.ok,
            "ops_ok": tally.ops_ok,
            "unchanged": tally.unchanged,
            "changes_acked": tally.changes_acked,
            "errors": dict(tally.errors),
            "measure_from": self.measure_from,
            "last_done": tally.last_done,
            "hit_request_bound": tally.sent >= self.request_bound,
            "max_late_ms": None if worst_late is None else worst_late * 1000,
            "histogram": tally.recorded().encode(),
            "expected": dict(tally.expected),
            "uncertain": dict(tally.uncertain),
            "planned": None if self.zipf is None else dict(self.zipf.planned),
            "planned_ops": None
            if self.zipf is None
            else {"likes": self.zipf.likes, "unlikes": self.zipf.unlikes},
        }

    async def _expire(self, channels: Sequence[Channel]) -> None:
        """One timer for all requests (cheaper than one per request): fail those past the timeout."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for channel in channels:
                channel.expire(now, self.spec.timeout)
            if self.dispatch is not None:
                self.dispatch.expire(now)


#: A request the dispatcher holds: its index, what it is, when it was due (monotonic seconds).
_Due = tuple[int, _Request, float]


class _Dispatch:
    """The raw client's open loop, without a task, future or semaphore per request: an open-loop
    client has to cost far less CPU than the servers it loads, or it measures itself.

    A request that falls due goes straight to an idle connection to its node; while none is idle it
    waits in that node's queue, its latency already running from its due time, and the next answer
    from that node hands its connection to the oldest one waiting. A queued request still unsent
    ``timeout`` seconds after it was due fails as ``NO_CONNECTION``, as in the task-based loop. An
    unlike that must follow its like's answer (``zipf``) is parked until that answer comes."""

    def __init__(self, worker: _Worker, channels: Sequence[_RawChannel], where: Sequence[int]) -> None:
        self.worker = worker
        urls = len(worker.spec.urls)
        self.idle: list[list[_RawChannel]] = [[] for _ in range(urls)]
        self.queued: list[collections.deque[_Due]] = [collections.deque() for _ in range(urls)]
        self.url_of: dict[_RawChannel, int] = {}
        self.answer_of: dict[_RawChannel, Callable[[Outcome], None]] = {}
        for channel, url in zip(channels, where, strict=True):
            self.idle[url].append(channel)
            self.url_of[channel] = url
            self.answer_of[channel] = functools.partial(self._answered, channel)
        self.in_flight: dict[_RawChannel, _Due] = {}
        #: Requests waiting for an earlier request's answer, by that request's index.
        self.parked: dict[int, list[_Due]] = {}
        self.answered: set[int] = set()
        self.targets = frozenset() if worker.zipf is None else worker.zipf.targets
        self.opening: set[asyncio.Task[None]] = set()
        self.drained = asyncio.Event()
        self.scheduling = True

    async def run(self, start: float) -> float:
        """Dispatch each request as it falls due (``_Worker.schedule``), then wait (bounded) for the
        answers; how late, at worst, a request was dispatched."""
        worker = self.worker
        async for k, due in worker.schedule(start):
            self.due(k, due)
        self.scheduling = False
        self._check_drained()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(worker.spec.timeout * 2 + 5.0):
                await self.drained.wait()
        self._abandon_all()
        return worker.worst_late

    def due(self, i: int, intended: float) -> None:
        request = self.worker.request_of(i)
        if request.after is not None and request.after not in self.answered:
            self.parked.setdefault(request.after, []).append((i, request, intended))
        else:
            self._send_or_queue((i, request, intended))

    def _send_or_queue(self, due: _Due) -> None:
        url = due[1].url
        idle = self.idle[url]
        if idle:
            self._submit(idle.pop(), due)
        else:
            self.queued[url].append(due)

    def _submit(self, channel: _RawChannel, due: _Due) -> None:
        self.in_flight[channel] = due
        if not channel.usable:  # dropped (a timeout, a server restart): reconnect first
            task = asyncio.get_running_loop().create_task(self._reopen(channel))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)
            return
        self.worker.tally.sent += 1
        request = due[1]
        channel.submit(request.method, request.path, request.body, self.answer_of[channel])

    async def _reopen(self, channel: _RawChannel) -> None:
        try:
            await channel.open()
        except (OSError, TimeoutError) as exc:
            self.worker.tally.sent += 1  # as the task-based loop counts a send whose connect failed
            self._answered(channel, exc)
            return
        request = self.in_flight[channel][1]
        self.worker.tally.sent += 1
        channel.submit(request.method, request.path, request.body, self.answer_of[channel])

    def _answered(self, channel: _RawChannel, outcome: Outcome) -> None:
        """A request ended: count it, release what waited for it, give its connection the next one."""
        i, request, intended = self.in_flight.pop(channel)
        self.worker.record(i, request, intended, outcome)
        if i in self.targets:
            self.answered.add(i)
            for parked in self.parked.pop(i, ()):
                self._send_or_queue(parked)
        url = self.url_of[channel]
        waiting = self.queued[url]
        if waiting:
            self._submit(channel, waiting.popleft())
        else:
            self.idle[url].append(channel)
            self._check_drained()

    def expire(self, now: float) -> None:
        """Fail the queued requests that found no connection within the timeout of being due."""
        bound = now - self.worker.spec.timeout
        for waiting in self.queued:
            while waiting and waiting[0][2] < bound:
                i, _, intended = waiting.popleft()
                self._not_sent(i, intended)
        self._check_drained()

    def _not_sent(self, i: int, intended: float) -> None:
        """Count a request never sent, and the unlikes parked behind it (they cannot be sent either)."""
        self.worker.not_sent(intended >= self.worker.measure_from)
        for j, _, parked_at in self.parked.pop(i, ()):
            self._not_sent(j, parked_at)

    def _check_drained(self) -> None:
        if not self.scheduling and not self.in_flight and not self.parked and not any(self.queued):
            self.drained.set()

    def _abandon_all(self) -> None:
        """At the end: requests still unanswered or unsent count as abandoned."""
        worker = self.worker
        for channel, (_, request, intended) in self.in_flight.items():
            channel.close()  # its answer may still come: the connection must not serve another request
            worker.abandon(request, intended >= worker.measure_from, sent=True)
        waiting = [due for queue in self.queued for due in queue]
        waiting += [due for parked in self.parked.values() for due in parked]
        for _, request, intended in waiting:
            worker.abandon(request, intended >= worker.measure_from, sent=False)
        self.in_flight.clear()
        self.parked.clear()
        for queued in self.queued:
            queued.clear()
        for task in self.opening:
            task.cancel()


def _worker_main(spec: LoadSpec, index: int, ready: Any, go: Any, answers: Any) -> None:
    """A worker process: pin itself, run its share, put ("ok", figures) or ("error", text)."""
    try:
        if spec.cpus is not None:
            os.sched_setaffinity(0, spec.cpus)
        answers.put(("ok", run_async(lambda: _Worker(spec, index).run(ready, go))))
    except BaseException as exc:
        answers.put(("error", f"worker {index}: {exc!r}"))
        raise


# -- the parent ----------------------------------------------------------------------------------------


def pinning_possible(cpus: Sequence[int]) -> bool:
    """Whether this process may run on every CPU of ``cpus`` (so workers can be pinned there)."""
    try:
        return bool(cpus) and set(cpus) <= os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return False


def run_load(
    spec: LoadSpec, *, on_measure: Callable[[Mapping[str, int]], Callable[[], Any]] | None = None
) -> dict[str, Any]:
    """Run ``spec`` in ``spec.workers`` processes and merge what they saw.

    ``on_measure`` is called with the workers' pids when the warm-up ends; what it returns is called
    when the load is over and its result is kept under ``"watch"`` (the caller's CPU sample, say).
    """
    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(spec.workers)]
    go, answers = context.Event(), context.Queue()
    workers = [
        context.Process(target=_worker_main, args=(spec, i, ready[i], go, answers), daemon=True)
        for i in range(spec.workers)
    ]
    for worker in workers:
        worker.start()
    outcomes: list[tuple[str, Any]] = []
    watched: Any = None
    try:
        _wait_ready(workers, ready, answers)
        go.set()
        finish: Callable[[], Any] | None = None
        if on_measure is not None:
            time.sleep(spec.warmup)
            finish = on_measure({f"load_generator_{i}": w.pid or 0 for i, w in enumerate(workers)})
        bound = spec.warmup + spec.seconds + 3 * spec.timeout + 30.0
        for _ in workers:
            try:
                outcomes.append(answers.get(timeout=bound))
            except queue.Empty as exc:
                raise RuntimeError(f"a load worker did not report within {bound:.0f} s") from exc
        if finish is not None:
            watched = finish()
    finally:
        for worker in workers:
            worker.join(timeout=10.0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
    failures = [text for status, text in outcomes if status != "ok"]
    if failures:
        raise RuntimeError("; ".join(failures))
    result = merge(spec, [figures for _, figures in outcomes])
    if watched is not None:
        result["watch"] = watched
    return result


def _wait_ready(workers: Sequence[Any], ready: Sequence[Any], answers: Any) -> None:
    """Until every worker is ready; a worker that died or a bound that passed raises at once."""
    deadline = time.monotonic() + READY_TIMEOUT
    for _ in range(int(READY_TIMEOUT / 0.05) + 2):
        if all(event.is_set() for event in ready):
            return
        dead = [w.exitcode for w in workers if w.exitcode is not None]
        if dead or time.monotonic() > deadline:
            why = f"exited with {dead}" if dead else f"not ready within {READY_TIMEOUT:.0f} s"
            raise RuntimeError(f"load worker(s) {why}: {_drain(answers)}")
        time.sleep(0.05)
    raise RuntimeError(f"load workers not ready within {READY_TIMEOUT:.0f} s")


def _drain(answers: Any) -> list[Any]:
    found = []
    with contextlib.suppress(queue.Empty):
        for _ in range(100):
            found.append(answers.get_nowait())
    return found


def merge(spec: LoadSpec, parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from the workers' figures: merged histogram, summed counts, rate over the window."""
    histogram = new_histogram()
    errors: Counter[str] = Counter()
    for part in parts:
        histogram.decode_and_add(part["histogram"])
        errors.update(part["errors"])
    ok = sum(part["ok"] for part in parts)
    window_start = min(part["measure_from"] for part in parts)
    window_end = max((part["last_done"] for part in parts), default=window_start)
    elapsed = max(window_end - window_start, 1e-9)
    lateness = [part["max_late_ms"] for part in parts if part["max_late_ms"] is not None]
    ops_ok = sum(part["ops_ok"] for part in parts)
    return {
        "mode": spec.mode,
        "shape": spec.shape,
        "per_request": spec.per_request,
        "urls": list(spec.urls),
        "seconds": spec.seconds,
        "warmup_s": spec.warmup,
        "workers": spec.workers,
        "connections": spec.connections,
        "client": spec.client,
        "offered_rate": spec.rate if spec.mode == "open" else None,
        "pinned_cpus": list(spec.cpus) if spec.cpus is not None else None,
        "requests": sum(part["measured"] for part in parts),
        "sent_including_warmup": sum(part["sent"] for part in parts),
        "not_sent": sum(part["not_sent"] for part in parts),
        "ok": ok,
        "unchanged": sum(part["unchanged"] for part in parts),
        "changes_acked": sum(part["changes_acked"] for part in parts),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "elapsed_s": elapsed if ok else 0.0,
        "achieved_rate": ok / elapsed if ok else 0.0,
        "ops_ok": ops_ok,
        "ops_rate": ops_ok / elapsed if ok else 0.0,
        "latency": latency_summary(histogram),
        "max_late_ms": max(lateness) if lateness else None,
        "hit_request_bound": any(part["hit_request_bound"] for part in parts),
        # Item id -> net count change acknowledged / write operations whose fate is unknown (their
        # request failed) / the plan's net change (zipf only): what the servers must hold afterwards.
        "expected_counts": _summed(part["expected"] for part in parts),
        "uncertain_counts": _summed(part["uncertain"] for part in parts),
        "planned_counts": None if spec.shape != "zipf" else _summed(part["planned"] or {} for part in parts),
        "planned_ops": None
        if spec.shape != "zipf"
        else dict(_summed(part["planned_ops"] or {} for part in parts)),
    }


def _summed(counters: Iterable[Mapping[int, int]]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)
