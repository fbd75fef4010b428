"""What the store publishes: which items changed and whose likes, for the modules that follow it.

The store keeps items and joins them; everything that must hear of a change (the checkpoint's dirty
set, anti-entropy's changed set and digests, the per-user index) implements ``ChangeListener`` and
is told once per change, in one call (a like is the hot path), after the item's state changed,
whether the change was a local write or a merge from a peer. Tiering and partitioning plug in here:
a listener sees every change an item takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ChangeListener(Protocol):
    """Told of every change of the store's items."""

    def changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        """The item under ``raw`` changed: ``added`` now like it, ``removed`` no longer do (both empty
        when only its counters changed)."""
        ...


class ChangedKeys:
    """The keys of the items changed since the last ``drain``: what the next flush to the item store
    writes (``node.durable.durability``)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: set[bytes] = set()

    def changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        self._keys.add(raw)

    def drain(self) -> set[bytes]:
        """The keys changed since the last call."""
        keys, self._keys = self._keys, set()
        return keys

    def restore(self, keys: set[bytes]) -> None:
        """Give back keys drained by a flush that failed: the next one writes them."""
        self._keys |= keys

    def __len__(self) -> int:
        return len(self._keys)
