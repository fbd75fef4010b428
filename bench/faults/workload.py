"""The clients: concurrent likes and unlikes through the nodes, each operation recorded (see the package)."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from bench.faults.cluster import Cluster
from bench.faults.history import Kind, Op, Outcome, Pair, answer_json, error_code
from bench.faults.settings import CONTENT_TYPE, Settings


class Workload:
    """Concurrent clients writing likes and unlikes, each operation recorded; bounded in count and time."""

    def __init__(self, cluster: Cluster, settings: Settings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.pairs: list[Pair] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.max_ops_per_client = int(max(settings.seconds, 10) * 200)

    def start(self) -> None:
        # A fresh connection per operation: a refused connect is then a clean "nothing sent".
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(self.settings.clients)]

    async def stop(self) -> None:
        """No new operations; wait for those in flight (each bounded by the client timeout)."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.op_timeout * 3)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _client(self, index: int) -> None:
        s = self.settings
        rng = random.Random(s.seed * 1000 + index)
        names = self.cluster.names
        next_user = (index + 1) * 1_000_000

        def new_pair(home: str | None) -> Pair:
            nonlocal next_user
            next_user += 1
            pair = Pair(rng.randrange(s.items), next_user, home)
            self.pairs.append(pair)
            return pair

        toggles = [new_pair(rng.choice(names)) for _ in range(s.toggle_pairs)]
        likes = [new_pair(None) for _ in range(s.like_pairs)]
        for _ in range(self.max_ops_per_client):
            if self._stop.is_set():
                return
            kind: Kind
            if rng.random() < s.like_only_share:
                slot = rng.randrange(len(likes))
                pair, kind, node = likes[slot], "like", rng.choice(names)
                if len(pair.ops) >= 3:  # enough retries of this one: a fresh pair
                    likes[slot] = new_pair(None)
            else:
                slot = rng.randrange(len(toggles))
                pair = toggles[slot]
                assert pair.home is not None
                attempted = [op for op in pair.ops if op.outcome not in ("fail", "refused")]
                liked = bool(attempted) and attempted[-1].kind == "like"
                kind = "unlike" if liked and rng.random() < 0.7 else "like"
                node = pair.home
            await self._invoke(pair, kind, node)
            if pair.home is not None and pair.ops[-1].outcome == "info":
                pair.retired = True  # it may still land after anything we send next
                toggles[toggles.index(pair)] = new_pair(rng.choice(names))
            await asyncio.sleep(s.think)

    async def _invoke(self, pair: Pair, kind: Kind, node: str) -> None:
        assert self._session is not None
        url = f"{self.cluster.urls[node]}/v1/items/{CONTENT_TYPE}/{pair.item}/likes/{pair.user}"
        started = time.monotonic()
        outcome: Outcome
        changed: bool | None = None
        try:
            async with self._session.request(
                "PUT" if kind == "like" else "DELETE",
                url,
                timeout=aiohttp.ClientTimeout(total=self.settings.op_timeout),
            ) as response:
                body = await response.read()
                status = response.status
            # 4xx: rejected, changes nothing (429 included); 5xx may have landed (write_timeout does),
            # except 503 not_durable: the node says the write changed nothing, which the checker holds it to.
            if status == 503 and error_code(body) == "not_durable":
                outcome = "refused"
            else:
                outcome = "ok" if status == 200 else "fail" if 400 <= status < 500 else "info"
            if outcome == "ok":
                changed = answer_json(body).get("changed") is True
        except aiohttp.ClientConnectorError:
            outcome = "fail"  # the connection was never made: nothing was sent
        except (aiohttp.ClientError, TimeoutError, OSError):
            outcome = "info"  # sent, then timed out or reset: it may or may not have landed
        pair.ops.append(Op(kind, node, outcome, started, time.monotonic(), changed))
