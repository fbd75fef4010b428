"""The contract between the checkpointer and the stores it copies merged item state to.

The checkpointer hands a sink batches of ``ItemCheckpoint``: per item, the users whose like changed
since the last successful write (or, with ``full``, every current liker), the count, every counter and
optionally the item's whole serialized state. A sink applies a batch **idempotently**: writing a batch
twice leaves exactly what writing it once does, so after any failure the checkpointer simply writes
the same batch again, without knowing how much of it had landed.

Every failure to reach or use a sink's server surfaces as ``SinkUnavailable`` within about the sink's
``timeout``, never as a hang, and a sink reconnects by itself on a later ``write`` once the server is
back: a sink outage must never block likes (docs/architecture.md, Checkpoints).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.state.item import ItemKey

#: Seconds any one network operation (connect included) may take before the sink gives up.
DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ItemCheckpoint:
    """What one item's owner writes: the users whose like changed since the last successful write."""

    #: Which item.
    key: ItemKey
    #: How many users like the item now (``== |likers|``).
    count: int
    #: user -> liked-at (ms since the epoch) of the changed users who like the item now. A sink keeps
    #: the liked-at it already holds for a user who still likes it: the first like is what counts.
    liked: Mapping[int, int]
    #: Changed users who no longer like the item.
    unliked: Collection[int]
    #: Every named PN-counter's current value.
    counters: Mapping[str, int]
    #: The full state (``node.state.item.encode_item``) for disaster recovery; None leaves the stored one.
    state: bytes | None
    #: ``liked`` holds every current liker: the sink cancels or removes any other user it holds.
    full: bool = False


class CheckpointSink(Protocol):
    """A store merged item state is checkpointed to."""

    #: "sqlite", "redis" or "mysql": how logs, metrics and the config name this sink.
    name: str

    async def open(self) -> None:
        """Connect and create the schema if missing (idempotent); SinkUnavailable if unreachable."""
        ...

    async def write(self, batch: Sequence[ItemCheckpoint]) -> None:
        """Apply ``batch``; idempotent, so a batch that raised may be written again whole."""
        ...

    async def close(self) -> None:
        """Release connections and files; later writes raise SinkUnavailable."""
        ...

    async def read_item(self, key: ItemKey) -> tuple[int, set[int]]:
        """The stored count and the users stored as liking the item (for checks, not hot paths)."""
        ...


class StateSink(CheckpointSink, Protocol):
    """A sink that also keeps every item's serialized state, so a cluster can be restored from it."""

    def load_states(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Yield ``(ItemKey.to_bytes(), state)`` for every item stored with a state."""
        ...
