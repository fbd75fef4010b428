"""Delta dissemination: push what changed locally to peers every ``delta_interval``.

Deltas are tiny join-decompositions of local writes (Almeida et al., *Delta State Replicated Data
Types*), so joining one twice, late or out of order is harmless and the push can be fire-and-forget.
Pushes are rate-limited, not clocked: a write announced through ``wake`` is pushed at once if the
last push is at least ``delta_interval`` old, else when it becomes so. An idle cluster thus spreads a
like within a round trip, and a busy one sends one batch per interval; deltas of a replica that never
calls ``wake`` still go out every interval.
In a small cluster (at most ``full_fanout_peers`` live peers) every batch goes to every live peer and
replicas converge in about one interval. In a larger one a batch goes to ``fanout`` random peers and
each receiver forwards it to ``fanout`` more, for r = ceil(log_fanout(n + 1)) generations in all: an
epidemic of fanout + fanout**2 + ... + fanout**r copies (about 3n for fanout 2) that reaches
everyone with high probability. Whatever a lost frame leaves behind, anti-entropy repairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

from gossip.config import GossipConfig
from gossip.errors import PayloadError
from gossip.member import MemberInfo
from gossip.messages import Deltas, Message
from gossip.replica import Replica
from gossip.transport import Address
from gossip.wire import BATCH_RESERVE, batches, bytes_cost

#: How a disseminator sends one message to many peers: encoded and signed once by the caller.
Multicast = Callable[[Sequence[Address], Message], None]


class DeltaDisseminator:
    """Batches the replica's deltas into frames, pushes them, and merges the ones pushed to us."""

    def __init__(
        self,
        config: GossipConfig,
        replica: Replica,
        peers: Callable[[], list[MemberInfo]],
        multicast: Multicast,
        counters: Counter[str],
        rng: random.Random,
    ) -> None:
        self._config = config
        self._replica = replica
        self._peers = peers
        self._multicast = multicast
        self._counters = counters
        self._rng = rng
        self._ready = asyncio.Event()
        self._last_flush = 0.0

    def wake(self) -> None:
        """The replica has new deltas: push them as soon as the rate limit allows."""
        self._ready.set()

    async def run(self) -> None:
        """Push at most once per ``delta_interval``: at once when woken, else every interval."""
        interval = self._config.delta_interval
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), interval)
            self._ready.clear()
            wait = self._last_flush + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.flush():
                self._last_flush = loop.time()  # an empty tick is no push: a wake may go at once

    def flush(self) -> int:
        """Drain the replica's deltas and push them now; the number of (key, delta) items drained."""
        peers = self._peers()
        if not peers:
            # Nobody to tell: dropping is safe, anti-entropy ships the state once a peer shows up.
            dropped = self._replica.discard_deltas()
            self._counters["deltas_unsent"] += dropped
            return dropped
        items = self._replica.drain_deltas()
        if not items:
            return 0
        if len(peers) <= self._config.full_fanout_peers:
            self._push(items, peers, hops=0)
        else:
            fanout = self._config.fanout
            rounds = math.ceil(math.log(len(peers) + 1) / math.log(max(fanout, 2)))
            self._push(items, self._rng.sample(peers, min(fanout, len(peers))), hops=rounds - 1)
        return len(items)

    def handle(self, message: Deltas) -> None:
        """Merge each delta; a payload the replica rejects is counted and skipped."""
        merged: list[tuple[bytes, bytes]] = []
        for key, payload in message.items:
            try:
                self._replica.merge(key, payload)
            except PayloadError:
                self._counters["payload_errors"] += 1
                continue
            merged.append((key, payload))
        self._counters["deltas_merged"] += len(merged)
        if message.hops > 0 and merged:
            peers = [peer for peer in self._peers() if peer.name != message.sender]
            targets = self._rng.sample(peers, min(self._config.fanout, len(peers)))
            self._push(merged, targets, message.hops - 1)

    def _push(self, items: list[tuple[bytes, bytes]], peers: list[MemberInfo], hops: int) -> None:
        if not peers:
            return
        addresses = [peer.address for peer in peers]
        budget = self._config.max_frame_bytes - BATCH_RESERVE
        for batch in batches(items, lambda item: bytes_cost(*item), budget):
            self._multicast(addresses, Deltas(self._config.name, hops, tuple(batch)))
            self._counters["deltas_sent"] += len(batch) * len(addresses)
