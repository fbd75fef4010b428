"""Positive-negative counter: two G-Counters, increments and decrements; value = P - N.

Counts that carry no identity (views, shares, anonymous reactions). Each half only grows, so the
join is the join of the halves and any delta may arrive twice, late or out of order.
"""

from __future__ import annotations

from typing import Any

from crdt.errors import CodecError
from crdt.gcounter import GCounter
from crdt.protocol import ReplicatedData


class PNCounter:
    """A counter that goes up and down, with one entry per actor in each direction."""

    __slots__ = ("_n", "_p")

    def __init__(self) -> None:
        self._p = GCounter()
        self._n = GCounter()

    def increment(self, actor: str, amount: int = 1) -> PNCounter:
        """Add ``amount`` (>= 0) as ``actor``; return the delta."""
        delta = PNCounter()
        delta._p = self._p.increment(actor, amount)
        return delta

    def decrement(self, actor: str, amount: int = 1) -> PNCounter:
        """Subtract ``amount`` (>= 0) as ``actor``; return the delta."""
        delta = PNCounter()
        delta._n = self._n.increment(actor, amount)
        return delta

    def merge(self, other: PNCounter) -> None:
        """Join ``other`` (a state or a delta) in place."""
        if not isinstance(other, PNCounter):
            raise TypeError(f"cannot merge {type(other).__name__} into PNCounter")
        self._p.merge(other._p)
        self._n.merge(other._n)

    def value(self) -> int:
        """Increments minus decrements."""
        return self._p.value() - self._n.value()

    def copy(self) -> PNCounter:
        """An independent copy."""
        clone = PNCounter()
        clone._p = self._p.copy()
        clone._n = self._n.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PNCounter):
            return NotImplemented
        return self._p == other._p and self._n == other._n

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"PNCounter({self.value()})"

    def to_wire(self) -> list[Any]:
        """Deterministic form: ``[P, N]`` in G-Counter wire form."""
        return [self._p.to_wire(), self._n.to_wire()]

    @classmethod
    def from_wire(cls, wire: Any) -> PNCounter:
        """Rebuild from ``to_wire`` form; raise CodecError if it is malformed."""
        if type(wire) is not list or len(wire) != 2:
            raise CodecError("PNCounter: expected [P, N]")
        counter = cls()
        counter._p = GCounter.from_wire(wire[0])
        counter._n = GCounter.from_wire(wire[1])
        return counter


#: PNCounter implements the contract of every CRDT here (checked by mypy).
_CONTRACT: type[ReplicatedData[int]] = PNCounter
