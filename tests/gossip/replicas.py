"""A tiny replica for gossip tests: per key a grow-only set of ints, encoded with msgpack.

Deliberately not ``crdt``: gossip must work for any join-semilattice it is handed, and its tests must
not break when the real types change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgpack

from gossip.errors import PayloadError


def encode(values: Iterable[int]) -> bytes:
    """Deterministic bytes of a set: sorted, so equal sets give equal digests."""
    return msgpack.packb(sorted(values))  # type: ignore[no-any-return]


class GrowOnlySets:
    """A ``gossip.Replica``: key -> set of ints, joined by union."""

    def __init__(self) -> None:
        self.sets: dict[bytes, set[int]] = {}
        self._deltas: dict[bytes, set[int]] = {}
        self._changed: set[bytes] = set()
        self.merges = 0

    def add(self, key: bytes, *values: int) -> None:
        """A local write: the new values become a delta."""
        new = set(values) - self.sets.get(key, set())
        if new:
            self.sets.setdefault(key, set()).update(new)
            self._deltas.setdefault(key, set()).update(new)
            self._changed.add(key)

    def load(self, contents: dict[bytes, set[int]]) -> None:
        """Bulk state as if restored from a snapshot: indexed, but no deltas."""
        for key, values in contents.items():
            self.sets[key] = set(values)
        self._changed.update(contents)

    def value(self, key: bytes) -> frozenset[int]:
        return frozenset(self.sets.get(key, ()))

    def snapshot(self) -> dict[bytes, frozenset[int]]:
        return {key: frozenset(values) for key, values in self.sets.items()}

    # -- the Replica protocol ---------------------------------------------------------------------

    def drain_deltas(self) -> list[tuple[bytes, bytes]]:
        deltas = [(key, encode(values)) for key, values in self._deltas.items()]
        self._deltas.clear()
        return deltas

    def discard_deltas(self) -> int:
        dropped = len(self._deltas)
        self._deltas.clear()
        return dropped

    def drain_changed(self) -> Iterable[bytes]:
        changed, self._changed = self._changed, set()
        return changed

    def digest(self, key: bytes) -> bytes:
        return hashlib.blake2b(encode(self.sets.get(key, ())), digest_size=16).digest()

    def state(self, key: bytes) -> bytes | None:
        values = self.sets.get(key)
        return None if values is None else encode(values)

    def weight(self, key: bytes) -> int:
        return 9 * len(self.sets.get(key, ()))  # msgpack: up to 9 bytes an int

    def merge(self, key: bytes, payload: bytes) -> None:
        try:
            values = msgpack.unpackb(payload)
        except Exception as exc:
            raise PayloadError(f"undecodable payload for {key!r}") from exc
        if not isinstance(values, list) or not all(type(value) is int for value in values):
            raise PayloadError(f"payload for {key!r} is not a list of ints")
        self.merges += 1
        new = set(values) - self.sets.get(key, set())
        if new:
            self.sets.setdefault(key, set()).update(new)
            self._changed.add(key)
