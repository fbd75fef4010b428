"""Watching the failure detector: when each node first saw another in each state."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

from bench.faults.cluster import Cluster, get_json


class Watcher:
    """Polls every node's member list; records when each node first saw another in each state."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession, every: float = 0.1) -> None:
        self.cluster = cluster
        self.session = session
        self.every = every
        #: (time, observer, subject, state) at each change an observer reports.
        self.changes: list[tuple[float, str, str, str]] = []
        self.stats: dict[str, dict[str, int]] = {}
        self._last: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(name) for name in self.cluster.names))
            await asyncio.sleep(self.every)

    async def _poll(self, observer: str) -> None:
        if observer in self.cluster.paused or observer not in self.cluster.processes:
            return
        view = await get_json(self.session, self.cluster.urls[observer] + "/v1/cluster", timeout=0.5)
        if view is None:
            return
        now = time.monotonic()
        self.stats[observer] = {k: v for k, v in view["gossip"].items() if isinstance(v, int)}
        for member in view["members"]:
            key = (observer, member["name"])
            if self._last.get(key) != member["state"]:
                self._last[key] = member["state"]
                self.changes.append((now, observer, member["name"], member["state"]))

    def dead_verdicts(self, subject: str, since: float, until: float) -> dict[str, float]:
        """Observer -> seconds after ``since`` it first reported ``subject`` dead (within the window)."""
        first: dict[str, float] = {}
        for at, observer, who, state in self.changes:
            if who == subject and observer != subject and state == "dead" and since <= at <= until:
                first.setdefault(observer, at - since)
        return first

    def gossip_totals(self) -> dict[str, int]:
        names = ("members_suspected", "members_declared_dead", "refutations", "probe_failures", "frames_cut")
        return {k: sum(stats.get(k, 0) for stats in self.stats.values()) for k in names}
