"""The one write path: what a like, an unlike, a batch or a counter write does between its parsed
request and its answer, for the aiohttp routes (``node.http.api``) and the like lane
(``node.http.lane``) alike.

In order: the user's rate limit, the write staged in the store together with what the answer's causal
token names, the write metric, then the commit (``node.durable.durability``): the answer waits until
the log made the write durable and the write level is met. Each step is synchronous up to the
commit, so a rejected request changes nothing and an accepted one is staged without interleaving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress

from aiohttp import web

from node.durable.durability import Durability, WriteLevel
from node.http import causal
from node.http.limits import ApiGuard
from node.metrics import NodeMetrics
from node.state.item import ItemKey
from node.state.store import LikeResult, LikeStore

#: A batch's results: whether each op changed anything, the count after each, and the token entries.
BatchResult = tuple[list[bool], list[int], list[causal.TokenEntry]]


@dataclass(frozen=True)
class Writes:
    """The node's write path: its rate limits, store, metrics and log."""

    guard: ApiGuard
    metrics: NodeMetrics
    durability: Durability

    @property
    def store(self) -> LikeStore:
        """The store written to."""
        return self.durability.store

    def level(self, text: str | None) -> WriteLevel:
        """The write level ``?w=`` asks for (422 if it names none)."""
        return self.durability.level(text)

    def set_like(
        self, key: ItemKey, user: int, *, liking: bool
    ) -> tuple[LikeResult, tuple[causal.TokenEntry, ...]]:
        """Like or unlike, staged: the user's rate, the store, the metric; what the answer's token names."""
        self.guard.limit_user(user)
        result, produced = causal.apply_like(self.store, key, user, liking=liking)
        if result.changed:
            self.metrics.count_writes("like" if liking else "unlike")
        return result, produced

    def apply_batch(self, keys: Sequence[bytes], users: Sequence[int], liking: Sequence[bool]) -> BatchResult:
        """Many likes and unlikes, staged in order, after every user's rate (all or none)."""
        self.guard.limit_users(users)
        changed, counts, produced = causal.apply_batch(self.store, keys, users, liking)
        changes = changed.count(True)
        if changes:
            likes = sum(compress(liking, changed))  # the changes that were likes
            for kind, count in (("like", likes), ("unlike", changes - likes)):
                if count:
                    self.metrics.count_writes(kind, count)
        return changed, counts, produced

    def add_to_counter(self, key: ItemKey, name: str, delta: int) -> int:
        """Add ``delta`` to a named counter, staged; its value once applied."""
        value = self.store.add_to_counter(key, name, delta)
        if delta:
            self.metrics.count_writes("counter")
        return value

    async def commit(self, level: WriteLevel, touched: Sequence[ItemKey] = ()) -> None:
        """Wait until the writes just staged are durable and replicated as ``level`` asks (``touched``:
        the items written, needed above level 1). Call it right after them, with no await between."""
        await self.durability.commit(level, touched)

    def commit_local(self) -> asyncio.Future[None] | None:
        """``commit`` at level 1 without a coroutine (the like lane): the log record's future, or None
        when the writes changed nothing."""
        return self.durability.commit_local()


#: The application's write path, set by ``node.http.api.create_app``.
WRITES = web.AppKey("writes", Writes)
