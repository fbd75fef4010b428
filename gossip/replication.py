"""Acknowledged replication: push deltas to live peers now and wait for their receipts.

Delta dissemination is fire-and-forget, which is right for the default write level (durable on the
node that took the write; gossip and anti-entropy spread it). A client that asks for ``majority`` or
``all`` wants to hear back only once that many replicas hold the write, so those writes also travel
as a ``Replicate`` message that every live peer answers with ``Replicated`` after merging it. A
receipt means the peer's replica holds the deltas in memory; the write is durable on the node that
took it, so a peer crash before its own snapshot loses nothing that anti-entropy cannot bring back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gossip.errors import PayloadError, TooFewPeers
from gossip.member import MemberInfo
from gossip.messages import Message, Origin, Replicate, Replicated
from gossip.replica import Replica
from gossip.transport import Address

Send = Callable[[Address, Message], None]


@dataclass
class _Waiting:
    """One replicate call: who still may answer, who did, and when enough have."""

    asked: frozenset[str]
    needed: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    confirmed: set[str] = field(default_factory=set)


class Replicator:
    """Both sides of ``Replicate``/``Replicated``."""

    def __init__(
        self,
        replica: Replica,
        origin: Callable[[], Origin],
        live_peers: Callable[[], list[MemberInfo]],
        send: Send,
        counters: Counter[str],
    ) -> None:
        self._replica = replica
        self._origin = origin
        self._live_peers = live_peers
        self._send = send
        self._counters = counters
        self._seq = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}

    async def replicate(self, items: Sequence[tuple[bytes, bytes]], copies: int, timeout: float) -> int:
        """Send ``items`` to every live peer; wait until ``copies`` confirm or ``timeout`` seconds
        pass. How many confirmed; TooFewPeers at once when fewer than ``copies`` peers are alive."""
        peers = self._live_peers()
        if copies <= 0:
            return 0
        if len(peers) < copies:
            self._counters["replicate_short"] += 1
            raise TooFewPeers(len(peers), copies)
        seq = next(self._seq)
        waiting = self._waiting[seq] = _Waiting(frozenset(p.name for p in peers), copies)
        message = Replicate(self._origin(), seq, tuple(items))
        try:
            for peer in peers:
                self._send(peer.address, message)
            try:
                await asyncio.wait_for(waiting.done.wait(), timeout)
            except TimeoutError:
                self._counters["replicate_timeouts"] += 1
            return len(waiting.confirmed)
        finally:
            del self._waiting[seq]

    def handle_replicate(self, message: Replicate) -> None:
        """Merge the deltas and confirm; a payload the replica rejects is not confirmed."""
        for key, payload in message.items:
            try:
                self._replica.merge(key, payload)
            except PayloadError:
                self._counters["payload_errors"] += 1
                return
        self._counters["replicate_merged"] += len(message.items)
        self._send(message.origin.address, Replicated(self._origin().name, message.seq))

    def handle_replicated(self, message: Replicated) -> None:
        """Count a receipt from a peer we asked; ignore strays and duplicates."""
        waiting = self._waiting.get(message.seq)
        if waiting is None or message.sender not in waiting.asked:
            return
        waiting.confirmed.add(message.sender)
        if len(waiting.confirmed) >= waiting.needed:
            waiting.done.set()
