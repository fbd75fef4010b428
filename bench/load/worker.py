"""One worker process: its share of a load's connections and requests, sent closed or open loop,
each answer judged and counted."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import aiohttp
import orjson
from hdrh.histogram import HdrHistogram

from bench.common import run_async
from bench.load.channels import AiohttpChannel, Channel, Outcome, RawChannel
from bench.load.dispatch import Dispatch
from bench.load.plan import Request, ZipfPlan, populated_count
from bench.load.spec import (
    ABANDONED,
    HIST_LOWEST_US,
    MAX_BATCH_TEMPLATES,
    MAX_IN_FLIGHT,
    NO_CONNECTION,
    NOT_SENT,
    READY_TIMEOUT,
    TICK,
    USER_STRIDE,
    LoadSpec,
    new_histogram,
)


@dataclasses.dataclass
class Tally:
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


class Worker:
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
        self.tally = Tally()
        self.measure_from = 0.0
        self.stop_at = 0.0
        self.idle: list[asyncio.Queue[Channel]] = []
        self.answered: dict[int, asyncio.Event] = {}
        self.zipf = ZipfPlan(spec, index, self.budget, self.user0) if spec.shape == "zipf" else None
        self.reads: list[tuple[bytes, list[int]]] = self._read_bodies() if spec.shape == "counts" else []
        self.batch_templates: dict[int, tuple[list[bytes], tuple[tuple[int, int], ...]]] = {}
        #: The raw client's open loop (``Dispatch``), set up with the connections.
        self.dispatch: Dispatch | None = None
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

    def request_of(self, i: int) -> Request:
        """The i-th request of this worker."""
        spec = self.spec
        urls = len(spec.urls)
        if spec.shape == "like":
            item = spec.item_base + (i * spec.workers + self.index) % spec.items
            path = f"/v1/items/{spec.content_type}/{item}/likes/{self.user0 + i}"
            return Request((i + self.index) % urls, b"PUT", path, b"", ((item, 1),))
        if spec.shape == "zipf":
            assert self.zipf is not None
            item, user = self.zipf.items[i], self.zipf.users[i]
            after = self.zipf.after.get(i)
            path = f"/v1/items/{spec.content_type}/{item}/likes/{user}"
            method, sign = (b"PUT", 1) if after is None else (b"DELETE", -1)
            return Request(user % urls, method, path, b"", ((item, sign),), after)
        if spec.shape == "counts":
            body, _ = self.reads[(i * spec.workers + self.index) % len(self.reads)]
            return Request((i + self.index) % urls, b"POST", "/v1/counts", body, ())
        heads, writes = self.batch_template((i * spec.workers + self.index) * spec.per_request % spec.items)
        user = self.user0 + i * spec.per_request
        users = map(b"%d}".__mod__, range(user, user + spec.per_request))
        ops = b",".join(map(bytes.__add__, heads, users))
        return Request((i + self.index) % urls, b"POST", "/v1/batch", b'{"ops":[' + ops + b"]}", writes)

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

    def judge(self, i: int, request: Request, body: bytes) -> tuple[str | None, int, int]:
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

    def record(self, i: int, request: Request, intended: float, outcome: Outcome) -> None:
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

    def abandon(self, request: Request, measured: bool, *, sent: bool) -> None:
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
                # sleep returns at once, spinning the loop on the CPU the load generator needs.
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
                [RawChannel(spec.urls[u]) for u in where]
                if spec.client == "raw"
                else [AiohttpChannel(client, spec.urls[u]) for u in where]
            )
            self.idle = [asyncio.Queue() for _ in spec.urls]
            for u, channel in zip(where, channels, strict=True):
                if isinstance(channel, RawChannel):
                    channel.timeout = spec.timeout
                self.idle[u].put_nowait(channel)
            if spec.mode == "open" and spec.client == "raw":
                self.dispatch = Dispatch(self, [cast(RawChannel, c) for c in channels], where)
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


def worker_main(spec: LoadSpec, index: int, ready: Any, go: Any, answers: Any) -> None:
    """A worker process: pin itself, run its share, put ("ok", figures) or ("error", text)."""
    try:
        if spec.cpus is not None:
            os.sched_setaffinity(0, spec.cpus)
        answers.put(("ok", run_async(lambda: Worker(spec, index).run(ready, go))))
    except BaseException as exc:
        answers.put(("error", f"worker {index}: {exc!r}"))
        raise
