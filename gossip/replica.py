"""The contract between gossip and the application: per-key state as opaque bytes.

Gossip never interprets a payload (hashicorp/memberlist's Delegate plays the same role): the node
hands in a ``Replica`` and gossip moves its deltas, compares its digests and ships its states.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Replica(Protocol):
    """Application state replicated by gossip, one join-semilattice value per key."""

    def drain_deltas(self) -> list[tuple[bytes, bytes]]:
        """Return and forget the deltas produced locally since the last call, as (key, delta)."""
        ...

    def discard_deltas(self) -> int:
        """Forget the deltas produced locally since the last call without encoding them (nobody
        to send them to); how many items had one."""
        ...

    def drain_changed(self) -> Iterable[bytes]:
        """Return and forget the keys whose state changed since the last call (writes and merges).

        The first call returns every key held, so a restarted node indexes what it loaded.
        """
        ...

    def digest(self, key: bytes) -> bytes:
        """A deterministic digest of the key's state: equal states give equal digests."""
        ...

    def state(self, key: bytes) -> bytes | None:
        """The key's full encoded state, or None when the key is unknown."""
        ...

    def weight(self, key: bytes) -> int:
        """About how many bytes ``state(key)`` would be, without encoding it (0 when unknown): a
        hot key too heavy to repair by state is left to deltas until it settles."""
        ...

    def merge(self, key: bytes, payload: bytes) -> None:
        """Join a delta or a full state into the key; raise ``gossip.errors.PayloadError`` if invalid."""
        ...
