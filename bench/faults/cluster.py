"""The cluster of a fault run: node processes (``bench.launch.NodeProcesses``) and the fault plan their
gossip obeys, plus the bounded polls the harness makes of them from its event loop."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from bench import testnode
from bench.launch import HOST, NodeProcesses

SECRET_ENV = "LIKES_FAULTS_SECRET"
#: Bound on starting nodes (all of a 5-node cluster at once, on a machine the load also uses), seconds.
START_TIMEOUT = 60.0


class Cluster(NodeProcesses):
    """Nodes of the shipped ``cluster.yaml`` started, killed, paused and restarted one by one, plus the
    fault plan: every node runs through ``bench.testnode --faults``, so its gossip obeys the plan's
    file (``gossip.faults``). Starting blocks until the node serves: the harness runs it in a thread
    (``asyncio.to_thread``), so the clients and the watcher keep going meanwhile."""

    def __init__(
        self,
        root: Path,
        n_nodes: int,
        *,
        checkpoint: dict[str, Any] | None = None,
        gossip: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            root,
            [f"n{i + 1}" for i in range(n_nodes)],
            gossip=gossip,
            sections={"checkpoint": checkpoint} if checkpoint else None,
            secret_env=SECRET_ENV,
            start_timeout=START_TIMEOUT,
        )
        self.plan_path = root / "faults.json"
        self.command = testnode.command(faults=self.plan_path)
        self.set_plan()

    def set_plan(self, blocked: Iterable[tuple[str, str]] = (), via: dict[str, int] | None = None) -> None:
        """Cut gossip between each pair of node names, and send each ``via`` node's gossip to a port."""
        address = self.file.gossip_address
        plan = {
            "blocked": [[address(a), address(b)] for a, b in blocked],
            "via": {address(n): f"{HOST}:{port}" for n, port in (via or {}).items()},
        }
        temporary = self.plan_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(plan))
        os.replace(temporary, self.plan_path)  # atomic: a node never reads half a plan


async def get_json(session: aiohttp.ClientSession, url: str, timeout: float = 1.0) -> Any:
    """``GET url`` as JSON, or None when the node does not answer in time."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            return await response.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


async def http_status(session: aiohttp.ClientSession, url: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET url``, None when nothing answers in time."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> float:
    """Poll ``check`` until true; the seconds it took. TimeoutError naming ``what`` past ``timeout``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(every)
