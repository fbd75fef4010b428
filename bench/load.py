"""Load generation for like throughput and latency: separate processes, keep-alive HTTP, HDR histograms.

Two modes, both sending ``PUT /v1/items/{type}/{id}/likes/{user}`` spread over a list of base URLs:

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

Errors are counted by kind: ``http <status>`` or the exception's class name. A 200 whose body does
not say ``changed: true`` counts as ``unchanged``: with distinct users it means the server did not
do the work it was asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import orjson
from hdrh.histogram import HdrHistogram

#: Users of worker ``w`` are ``user_base + w * USER_STRIDE + i``: distinct while i < USER_STRIDE.
USER_STRIDE = 10**12
#: Histogram range and precision, in microseconds: 1 us to one hour, 3 significant digits.
HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS = 1, 3_600_000_000, 3
#: Requests one open-loop worker lets be outstanding; past it, sends wait (and their latency shows it).
MAX_IN_FLIGHT = 10_000
#: How long the parent waits for workers to say they are ready (spawned, connections open), in seconds.
READY_TIMEOUT = 60.0
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
    sent: int = 0
    measured: int = 0
    ok: int = 0
    unchanged: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    last_done: float = 0.0
    #: Answers saying ``changed: true``, warm-up included: what the server must now hold.
    changes_acked: int = 0


class _AiohttpChannel:
    """One connection's worth of an ``aiohttp`` session (the session's pool holds the sockets)."""

    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client = client
        self.url = url

    async def open(self) -> None:
        async with self.client.get(f"{self.url}/healthz") as response:
            await response.read()

    async def put(self, path: str) -> tuple[int, bytes]:
        async with self.client.put(self.url + path) as response:
            return response.status, await response.read()

    def expire(self, now: float, timeout: float) -> None:
        """aiohttp enforces its own timeout."""

    def close(self) -> None:
        """The session closes the sockets."""


class _RawChannel(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this load: a
    pre-built ``PUT`` with no body, one request at a time (no pipelining), and a response read by its
    ``Content-Length``. It costs the client several times less CPU per request than ``aiohttp``'s
    client, which matters when one load core must outrun one server core. A broken or timed-out
    connection fails its request and is opened again for the next one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.path not in ("", "/"):
            raise ValueError(f"the raw client speaks plain http to a host:port, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        # The headers curl sends: a realistic minimum, the same for every system measured.
        self.tail = (
            f" HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: likes-bench/1\r\nAccept: */*\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        self.timeout = 10.0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.buffer.clear()
        async with asyncio.timeout(self.timeout):
            await loop.create_connection(lambda: self, self.host, self.port)

    async def put(self, path: str) -> tuple[int, bytes]:
        if self.transport is None or self.transport.is_closing():
            await self.open()
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.monotonic()
        self.transport.write(b"PUT " + path.encode() + self.tail)
        return await self.waiter

    def expire(self, now: float, timeout: float) -> None:
        """Fail a request outstanding for longer than ``timeout`` and drop its connection."""
        if self.waiter is not None and not self.waiter.done() and now - self.sent_at > timeout:
            self.waiter.set_exception(TimeoutError(f"no answer within {timeout} s"))
            if self.transport is not None:
                self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ValueError("a response without Content-Length"))
            if self.transport is not None:
                self.transport.abort()
            return
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < total:
            return
        status, body = int(self.buffer[9:12]), bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((status, body))


Channel = _AiohttpChannel | _RawChannel


class _Worker:
    """One process's share of a ``LoadSpec``: one channel per connection, channel j to URL j mod n."""

    def __init__(self, spec: LoadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.connections = spec.connections // spec.workers + (index < spec.connections % spec.workers)
        self.budget = spec.max_requests // spec.workers
        self.user0 = spec.user_base + index * USER_STRIDE
        self.tally = _Tally()
        self.measure_from = 0.0
        self.stop_at = 0.0

    def path(self, i: int) -> str:
        """The i-th request of this worker: a new user; items taken in turn."""
        spec = self.spec
        item = (i * spec.workers + self.index) % spec.items
        return f"/v1/items/{spec.content_type}/{item}/likes/{self.user0 + i}"

    async def request(self, channel: Channel, i: int, intended: float) -> None:
        """PUT one like; record its latency from ``intended`` if that lies in the measured window."""
        tally = self.tally
        tally.sent += 1
        measured = intended >= self.measure_from
        try:
            status, body = await channel.put(self.path(i))
            error = None if status == 200 else f"http {status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            body, error = b"", type(exc).__name__
        done = time.monotonic()
        changed = False
        if error is None:
            try:
                changed = orjson.loads(body).get("changed") is True
            except (orjson.JSONDecodeError, AttributeError):
                error = "bad body"
        tally.changes_acked += changed
        if not measured:
            return
        tally.measured += 1
        if error is not None:
            tally.errors[error] += 1
            return
        tally.ok += 1
        tally.unchanged += not changed
        tally.last_done = max(tally.last_done, done)
        tally.histogram.record_value(max(HIST_LOWEST_US, round((done - intended) * 1e6)))

    async def closed_loop(self, channels: Sequence[Channel]) -> None:
        """One loop per connection, each sending its next like when the last one is answered."""
        next_index = 0

        async def loop(channel: Channel) -> None:
            nonlocal next_index
            while next_index < self.budget:
                sent = time.monotonic()
                if sent >= self.stop_at:
                    return
                i, next_index = next_index, next_index + 1
                await self.request(channel, i, sent)

        await asyncio.gather(*(loop(channel) for channel in channels))

    async def open_loop(self, channels: Sequence[Channel], start: float) -> float:
        """Request k is due at ``start + (k + phase) / rate``; sends everything due on idle connections
        (waiting for one when all are busy), then sleeps until the next is due. Returns how late, at
        worst, a request was started (seconds)."""
        spec = self.spec
        rate = spec.rate / spec.workers
        phase = self.index / spec.workers
        total = min(self.budget, int((spec.warmup + spec.seconds) * rate))
        in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        idle: asyncio.Queue[Channel] = asyncio.Queue()
        for channel in channels:
            idle.put_nowait(channel)
        tasks: set[asyncio.Task[None]] = set()
        worst_late = 0.0

        async def send(i: int, due: float) -> None:
            try:
                channel = await idle.get()
                try:
                    await self.request(channel, i, due)
                finally:
                    idle.put_nowait(channel)
            finally:
                in_flight.release()

        k = 0
        while k < total:
            now = time.monotonic()
            due = start + (k + phase) / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while k < total and start + (k + phase) / rate <= now:
                due = start + (k + phase) / rate
                await in_flight.acquire()
                worst_late = max(worst_late, time.monotonic() - due)
                task = asyncio.create_task(send(k, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
        if tasks:
            await asyncio.wait(set(tasks), timeout=spec.timeout + 5.0)
        return worst_late

    async def run(self, ready: Any, go: Any) -> dict[str, Any]:
        spec = self.spec
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        timeout = aiohttp.ClientTimeout(total=spec.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as client:
            urls = [spec.urls[(j + self.index) % len(spec.urls)] for j in range(self.connections)]
            channels: list[Channel] = (
                [_RawChannel(url) for url in urls]
                if spec.client == "raw"
                else [_AiohttpChannel(client, url) for url in urls]
            )
            for channel in channels:
                if isinstance(channel, _RawChannel):
                    channel.timeout = spec.timeout
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
                    await self.closed_loop(channels)
                else:
                    worst_late = await self.open_loop(channels, start)
            finally:
                watchdog.cancel()
                for channel in channels:
                    channel.close()
        tally = self.tally
        return {
            "worker": self.index,
            "pid": os.getpid(),
            "sent": tally.sent,
            "measured": tally.measured,
            "ok": tally.ok,
            "unchanged": tally.unchanged,
            "changes_acked": tally.changes_acked,
            "errors": dict(tally.errors),
            "measure_from": self.measure_from,
            "last_done": tally.last_done,
            "hit_request_bound": tally.sent >= self.budget,
            "max_late_ms": None if worst_late is None else worst_late * 1000,
            "histogram": tally.histogram.encode(),
        }

    async def _expire(self, channels: Sequence[Channel]) -> None:
        """One timer for all requests (cheaper than one per request): fail those past the timeout."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for channel in channels:
                channel.expire(now, self.spec.timeout)


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
        bound = spec.warmup + spec.seconds + spec.timeout + 30.0
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
    return {
        "mode": spec.mode,
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
        "ok": ok,
        "unchanged": sum(part["unchanged"] for part in parts),
        "changes_acked": sum(part["changes_acked"] for part in parts),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "elapsed_s": elapsed if ok else 0.0,
        "achieved_rate": ok / elapsed if ok else 0.0,
        "latency": latency_summary(histogram),
        "max_late_ms": max(lateness) if lateness else None,
        "hit_request_bound": any(part["hit_request_bound"] for part in parts),
    }
