"""Grow-only counter: one monotonic total per actor; the value is their sum.

The state-based G-Counter of Shapiro et al. (*A comprehensive study of CRDTs*, 2011), delta-enabled:
an increment's delta is the actor's new total alone, and the join takes the maximum per actor, so a
delta applied twice or late changes nothing.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from crdt.dots import valid_actor_name
from crdt.errors import CodecError
from crdt.protocol import ReplicatedData

MAX_TOTAL = (1 << 64) - 1


class GCounter:
    """A grow-only counter with one entry per actor."""

    __slots__ = ("_totals",)

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}

    def increment(self, actor: str, amount: int = 1) -> GCounter:
        """Add ``amount`` (>= 0) as ``actor``; return the delta."""
        if not valid_actor_name(actor):
            raise ValueError("actor must be a non-empty string of at most 64 chars")
        if type(amount) is not int or amount < 0:
            raise ValueError("a G-Counter grows by a non-negative int")
        total = self._totals.get(actor, 0) + amount
        if total > MAX_TOTAL:
            raise ValueError("counter would exceed an unsigned 64-bit total")
        delta = GCounter()
        if total:  # canonical form: no zero entries, so equal counters compare equal
            self._totals[actor] = delta._totals[actor] = total
        return delta

    def merge(self, other: GCounter) -> None:
        """Join ``other`` (a state or a delta) in place: the maximum per actor."""
        if not isinstance(other, GCounter):
            raise TypeError(f"cannot merge {type(other).__name__} into GCounter")
        totals = self._totals
        for actor, total in other._totals.items():
            if total > totals.get(actor, 0):
                totals[actor] = total

    def value(self) -> int:
        """The sum over actors."""
        return sum(self._totals.values())

    def copy(self) -> GCounter:
        """An independent copy."""
        clone = GCounter()
        clone._totals = self._totals.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GCounter):
            return NotImplemented
        return self._totals == other._totals

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"GCounter({self.value()})"

    def to_wire(self) -> list[Any]:
        """Deterministic form: a flat ``actor, total`` list sorted by actor."""
        return [x for actor in sorted(self._totals) for x in (actor, self._totals[actor])]

    @classmethod
    def from_wire(cls, wire: Any) -> GCounter:
        """Rebuild from ``to_wire`` form; raise CodecError if it is malformed."""
        if type(wire) is not list or len(wire) % 2:
            raise CodecError("GCounter: expected a flat actor, total list")
        counter = cls()
        actors = wire[0::2]
        if not all(valid_actor_name(a) for a in actors):
            raise CodecError("GCounter: actor names must be non-empty strings of at most 64 chars")
        if any(a >= b for a, b in pairwise(actors)):
            raise CodecError("GCounter: actors must be strictly ascending")
        for actor, total in zip(actors, wire[1::2], strict=True):
            if type(total) is not int or not 0 < total <= MAX_TOTAL:
                raise CodecError("GCounter: totals must be positive unsigned 64-bit ints")
            counter._totals[actor] = total
        return counter


#: GCounter implements the contract of every CRDT here (checked by mypy).
_CONTRACT: type[ReplicatedData[int]] = GCounter
