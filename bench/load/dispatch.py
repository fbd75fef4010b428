"""The raw client's open loop: requests handed to idle connections as they fall due, without a task
per request."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bench.load.channels import Outcome, RawChannel
from bench.load.plan import Request

if TYPE_CHECKING:
    from bench.load.worker import Worker

#: A request the dispatcher holds: its index, what it is, when it was due (monotonic seconds).
Due = tuple[int, Request, float]


class Dispatch:
    """The raw client's open loop, without a task, future or semaphore per request: an open-loop
    client has to cost far less CPU than the servers it loads, or it measures itself.

    A request that falls due goes straight to an idle connection to its node; while none is idle it
    waits in that node's queue, its latency already running from its due time, and the next answer
    from that node hands its connection to the oldest one waiting. A queued request still unsent
    ``timeout`` seconds after it was due fails as ``NO_CONNECTION``, as in the task-based loop. An
    unlike that must follow its like's answer (``zipf``) is parked until that answer comes."""

    def __init__(self, worker: Worker, channels: Sequence[RawChannel], where: Sequence[int]) -> None:
        self.worker = worker
        urls = len(worker.spec.urls)
        self.idle: list[list[RawChannel]] = [[] for _ in range(urls)]
        self.queued: list[collections.deque[Due]] = [collections.deque() for _ in range(urls)]
        self.url_of: dict[RawChannel, int] = {}
        self.answer_of: dict[RawChannel, Callable[[Outcome], None]] = {}
        for channel, url in zip(channels, where, strict=True):
            self.idle[url].append(channel)
            self.url_of[channel] = url
            self.answer_of[channel] = functools.partial(self._answered, channel)
        self.in_flight: dict[RawChannel, Due] = {}
        #: Requests waiting for an earlier request's answer, by that request's index.
        self.parked: dict[int, list[Due]] = {}
        self.answered: set[int] = set()
        self.targets = frozenset() if worker.zipf is None else worker.zipf.targets
        self.opening: set[asyncio.Task[None]] = set()
        self.drained = asyncio.Event()
        self.scheduling = True

    async def run(self, start: float) -> float:
        """Dispatch each request as it falls due (``Worker.schedule``), then wait (bounded) for the
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

    def _send_or_queue(self, due: Due) -> None:
        url = due[1].url
        idle = self.idle[url]
        if idle:
            self._submit(idle.pop(), due)
        else:
            self.queued[url].append(due)

    def _submit(self, channel: RawChannel, due: Due) -> None:
        self.in_flight[channel] = due
        if not channel.usable:  # dropped (a timeout, a server restart): reconnect first
            task = asyncio.get_running_loop().create_task(self._reopen(channel))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)
            return
        self.worker.tally.sent += 1
        request = due[1]
        channel.submit(request.method, request.path, request.body, self.answer_of[channel])

    async def _reopen(self, channel: RawChannel) -> None:
        try:
            await channel.open()
        except (OSError, TimeoutError) as exc:
            self.worker.tally.sent += 1  # as the task-based loop counts a send whose connect failed
            self._answered(channel, exc)
            return
        request = self.in_flight[channel][1]
        self.worker.tally.sent += 1
        channel.submit(request.method, request.path, request.body, self.answer_of[channel])

    def _answered(self, channel: RawChannel, outcome: Outcome) -> None:
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
