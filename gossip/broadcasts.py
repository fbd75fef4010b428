"""Membership updates waiting to be piggybacked on pings and acks (memberlist's ``queue.go``).

Each update rides along a limited number of times, ``retransmit_mult * ceil(log10(n + 1))``, which
is enough for an epidemic to reach all n members with high probability; the least sent go first. A
newer update about a member replaces the queued one, so the queue never exceeds the member count.
"""

from __future__ import annotations

import math

from gossip.member import MemberInfo


class BroadcastQueue:
    """Transmit-limited queue of the latest update per member."""

    __slots__ = ("_queued", "_retransmit_mult")

    def __init__(self, retransmit_mult: int) -> None:
        self._retransmit_mult = retransmit_mult
        self._queued: dict[str, tuple[MemberInfo, int]] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def enqueue(self, update: MemberInfo) -> None:
        """Queue ``update``, replacing any queued update about the same member."""
        self._queued[update.name] = (update, 0)

    def take(self, limit: int, cluster_size: int) -> list[MemberInfo]:
        """Up to ``limit`` updates to piggyback now, least transmitted first."""
        if not self._queued:
            return []
        allowed = self._retransmit_mult * max(1, math.ceil(math.log10(cluster_size + 1)))
        chosen = sorted(self._queued.values(), key=lambda entry: entry[1])[:limit]
        for update, sent in chosen:
            if sent + 1 >= allowed:
                del self._queued[update.name]
            else:
                self._queued[update.name] = (update, sent + 1)
        return [update for update, _ in chosen]
