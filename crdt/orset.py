"""Add-wins observed-remove set without tombstones, delta-enabled: who liked an item.

The state is a dot kernel plus a causal context (Almeida, Shoker, Baquero, *Delta State Replicated
Data Types*, 2016, the AWORSet of section 7; riak_dt's ORSWOT is the state-based relative):

- the kernel maps each present element to the dots of the adds that made it present;
- ``_cc`` holds every dot this replica has seen, present or since removed.

Add creates a fresh dot for the element. Remove drops the element's dots from the kernel; they stay
in the context, which is all a removal needs to be remembered, so there are no tombstones. The join
keeps a dot if both sides hold it, or if one side holds it and the other has never seen it; a dot
one side holds and the other has seen but dropped was removed, so it goes. A concurrent add carries
a dot the remover never saw, so the add wins.

Unlike the paper's mutator, ``add`` does not retire the element's older dots: the delta covers only
its new dot. The kernel is then exactly "tags added minus tags removed" and the context "tags seen",
so joining any deltas, in any order, duplicated, late or early, gives the same value as a reference
OR-set of unique tags plus tombstones fed the same deliveries: no causal buffering is needed. Re-adding
a present element therefore keeps one more dot until the element is removed.

Elements are unsigned 64-bit integers (user ids). Dots are packed ints (see ``crdt.dots``).

A big set keeps the kernel in two parts, each element in exactly one: the dict ``_entries`` for recent
elements and those of several dots, and ``_columns`` (``crdt.columns``) for the rest, 16 bytes an
element. A peer's removals are found through ``crdt.dotindex``; the wire form is ``crdt.orset_wire``.
This module is the set's semantics: its mutators, its join and its queries.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain, compress, islice
from typing import Any

from crdt import columns as storage  # thresholds read at call time: tests lower them
from crdt import orset_wire
from crdt.columns import MAX_ELEMENT, Columns
from crdt.context import CausalContext
from crdt.dotindex import DotIndex
from crdt.dots import (
    ACTOR_BITS,
    ACTOR_MASK,
    MAX_COUNTER,
    actor_index,
    known_actor_index,
    make_dot,
    named,
)
from crdt.protocol import ReplicatedData

#: A present element's dots: one int in the common case, a sorted tuple when adds were concurrent.
Dots = int | tuple[int, ...]

#: Below this size a removal arriving from a peer is found by scanning the kernel; above it, by index.
_SCAN_BELOW = 64


def check_element(element: object) -> int:
    """Return ``element`` if it is an unsigned 64-bit int, else raise TypeError or ValueError."""
    if type(element) is not int:
        raise TypeError(f"ORSet elements are ints, not {type(element).__name__}")
    if not 0 <= element <= MAX_ELEMENT:
        raise ValueError("ORSet elements are unsigned 64-bit integers")
    return element


def _as_tuple(dots: Dots) -> tuple[int, ...]:
    return (dots,) if type(dots) is int else dots  # type: ignore[return-value]


def _pack(dots: list[int]) -> Dots | None:
    """The canonical ``Dots`` for a list of dots, or None when it is empty."""
    if not dots:
        return None
    if len(dots) == 1:
        return dots[0]
    return tuple(sorted(dots))


class ORSet:
    """An add-wins observed-remove set of unsigned 64-bit ints; see the module docstring."""

    __slots__ = ("_cc", "_columns", "_entries", "_index")

    def __init__(self) -> None:
        self._entries: dict[int, Dots] = {}
        self._cc = CausalContext()
        self._index: DotIndex | None = None
        self._columns: Columns | None = None

    # -- mutators: change the state in place and return the delta --------------------------------

    def add(self, actor: str, element: int) -> ORSet:
        """Add ``element`` as ``actor``; return the delta (an independent ORSet)."""
        return ORSet.of_dots(((element, self.add_dot(actor, element)),))

    def add_dot(self, actor: str, element: int) -> int:
        """Add ``element`` as ``actor`` and return the new dot alone: ``of_dots`` makes deltas of
        many such dots at once, cheaper than one delta per add."""
        check_element(element)
        dot = self._cc.next_dot(actor_index(actor))
        self.insert(element, dot)
        return dot

    def next_dot(self, actor: str) -> int:
        """The dot ``add_dot`` would give ``actor``'s next add, without adding anything: a writer that
        applies its adds only once they are durable mints their dots ahead with this."""
        return self._cc.next_dot(actor_index(actor))

    def insert(self, element: int, dot: int) -> None:
        """Add ``element`` under ``dot``, a dot minted for it (``next_dot``) and seen nowhere yet; a
        dot already in the context changes nothing, so applying an add twice is harmless."""
        check_element(element)
        if self._cc.covers(dot):
            return
        self._cc.add(dot)
        entries, columns = self._entries, self._columns
        held = entries.get(element)
        if held is None and columns is not None and element != columns.absent:
            held = columns.take(element)  # a second dot: the element moves to the dict
        entries[element] = dot if held is None else tuple(sorted((*_as_tuple(held), dot)))
        if self._index is not None:
            self._index.put(dot, element)
        if len(entries) >= (storage.COMPACT_MIN if columns is None else columns.limit) or held is not None:
            self._tidy()

    @classmethod
    def of_dots(cls, added: Iterable[tuple[int, int]]) -> ORSet:
        """The delta of the adds ``(element, dot)`` (dots as ``add_dot`` returned them)."""
        delta = cls()
        entries, cc = delta._entries, delta._cc
        for element, dot in added:
            held = entries.get(element)
            entries[element] = dot if held is None else tuple(sorted((*_as_tuple(held), dot)))
            cc.add(dot)
        return delta

    def single_add(self) -> tuple[int, int] | None:
        """``(element, dot)`` if this set is the delta of one add (``of_dots`` of one pair), else None:
        joining it is ``insert(element, dot)``, which a small set at rest does without unpacking."""
        entries, cc = self._entries, self._cc
        if len(entries) != 1 or self._columns is not None or cc.size() != 1:
            return None
        ((element, dot),) = entries.items()
        return (element, dot) if type(dot) is int and cc.covers(dot) else None

    @classmethod
    def of_removal(cls, dots: Iterable[int]) -> ORSet:
        """The delta of removing the adds ``dots``: they are seen, and none is held."""
        delta = cls()
        for dot in dots:
            delta._cc.add(dot)
        return delta

    def remove(self, element: int) -> ORSet:
        """Remove ``element``; return the delta (empty if it was absent)."""
        check_element(element)
        delta = ORSet()
        held = self._entries.pop(element, None)
        if held is None and self._columns is not None:
            held = self._columns.take(element)
            self._tidy()
        if held is not None:
            for dot in _as_tuple(held):
                delta._cc.add(dot)
        return delta

    # -- join ------------------------------------------------------------------------------------

    def merge(self, other: ORSet, removed: list[int] | None = None, added: list[int] | None = None) -> None:
        """Join ``other`` (a full state or a delta) into this set, in place; the elements the join
        took out go to ``removed`` and those it brought in to ``added``, when given (what a reverse
        index must change, found without comparing the set before and after)."""
        if not isinstance(other, ORSet):
            raise TypeError(f"cannot merge {type(other).__name__} into ORSet")
        if other is self:
            return
        if len(other) < len(self):  # a delta: counting its dots first is cheap
            held = len(other)
            held += sum(len(dots) - 1 for dots in other._entries.values() if not isinstance(dots, int))
            # Removals first: they touch only elements ``other`` does not hold, the join only those
            # it does, so the order is free, and the dot index does not yet list the dots just added.
            if other._cc.size() > held:  # other has seen dots it no longer holds: it removed something
                self._drop_removed_by(other, removed)
            self._join_held_by(other, removed, added)
        elif other._cc.size() > self._join_held_by(other, removed, added):
            self._drop_removed_by(other, removed)
        self._cc.join(other._cc)
        self._tidy()

    def _join_held_by(self, other: ORSet, removed: list[int] | None, added: list[int] | None) -> int:
        """Join the elements ``other`` holds; return how many dots it holds."""
        indexed: list[tuple[int, int]] = []
        held = len(other) + self._join_pairs(other, other._entries.items(), False, removed, added, indexed)
        theirs = other._columns
        if theirs is not None:  # single dots only: no dots beyond one per element to count
            pairs = compress(zip(theirs.elements, theirs.dots, strict=True), theirs.dots)
            self._join_pairs(other, pairs, True, removed, added, indexed)
        if self._index is not None and indexed:
            self._index.put_many(indexed)
        return held

    def _join_pairs(
        self,
        other: ORSet,
        pairs: Iterable[tuple[int, Dots]],
        ascending: bool,
        removed: list[int] | None,
        added: list[int] | None,
        indexed: list[tuple[int, int]],
    ) -> int:
        """Join ``other``'s ``(element, dots)`` ``pairs`` (``ascending``: in element order, so each
        column lookup starts where the last ended); return their dots beyond one per element."""
        entries, columns, cc = self._entries, self._columns, self._cc
        vv, cloud = cc.vv, cc.cloud
        indexing = self._index is not None
        last = columns.elements[-1] if columns is not None and columns.elements else -1
        extra = 0
        lo = 0
        for element, theirs in pairs:
            ours = entries.get(element)
            slot = -1
            if ours is None and element <= last and columns is not None:
                slot = columns.find(element, lo if ascending else 0)
                if slot >= 0:
                    ours = columns.dots[slot]
                    lo = slot + 1
                else:
                    lo = ~slot
            if ours == theirs:
                if type(theirs) is not int:
                    extra += len(theirs) - 1  # type: ignore[arg-type]
                continue
            if ours is None and type(theirs) is int:
                # The hot path: a new single dot, kept unless we saw it and dropped it already.
                if theirs >> ACTOR_BITS <= vv.get(theirs & ACTOR_MASK, 0) or theirs in cloud:
                    continue
                entries[element] = theirs
                if indexing:
                    indexed.append((theirs, element))
                if added is not None:
                    added.append(element)
                continue
            ours_t = () if ours is None else _as_tuple(ours)
            theirs_t = _as_tuple(theirs)
            extra += len(theirs_t) - 1
            kept = [d for d in ours_t if d in theirs_t or not other._cc.covers(d)]
            new = [d for d in theirs_t if d not in ours_t and not cc.covers(d)]
            joined = _pack(kept + new)
            if slot >= 0 and columns is not None:  # ours was a column's: it stays there if still one dot
                if type(joined) is int:
                    columns.dots[slot] = joined
                else:
                    columns.kill(slot)
                    if joined is not None:
                        entries[element] = joined
            elif joined is not None:
                entries[element] = joined
            elif entries.pop(element, None) is None:
                continue  # absent, and stays absent
            if joined is None:
                if removed is not None:
                    removed.append(element)
                continue
            if ours is None and added is not None:
                added.append(element)
            if indexing:
                indexed.extend((dot, element) for dot in new)
        return extra

    def _drop_removed_by(self, other: ORSet, removed: list[int] | None) -> None:
        """Drop the dots of elements ``other`` does not hold but whose dots it has seen."""
        theirs_cc = other._cc
        size = len(self)
        if not size or (not theirs_cc.vv and not theirs_cc.cloud):
            return
        if size >= _SCAN_BELOW and theirs_cc.size() * 4 < size:
            # A delta: visit the few dots it covers instead of every element we hold.
            if self._index is None:
                self._index = DotIndex(self._dot_pairs())
            for element in self._index.elements_covered_by(theirs_cc):
                if element not in other:
                    self._drop_covered(element, theirs_cc, removed)
            return
        for element in list(self._entries):
            if element not in other:
                self._drop_covered(element, theirs_cc, removed)
        if self._columns is not None:
            self._drop_covered_columns(other, removed)

    def _drop_covered(self, element: int, cc: CausalContext, removed: list[int] | None) -> None:
        """Drop the dots of ``element`` (which the other side does not hold) that ``cc`` covers."""
        entries = self._entries
        ours = entries.get(element)
        if ours is None:
            columns = self._columns
            slot = -1 if columns is None else columns.find(element)
            if slot < 0 or not cc.covers(columns.dots[slot]):  # type: ignore[union-attr]
                return
            columns.kill(slot)  # type: ignore[union-attr]
        elif type(ours) is int:
            if not cc.covers(ours):
                return
            del entries[element]
        else:
            kept = _pack([d for d in ours if not cc.covers(d)])  # type: ignore[union-attr]
            if kept is not None:
                if kept != ours:
                    entries[element] = kept
                return
            del entries[element]
        if removed is not None:
            removed.append(element)

    def _drop_covered_columns(self, other: ORSet, removed: list[int] | None) -> None:
        """``_drop_covered`` over every column slot, in one ascending pass over ``other`` too."""
        columns, theirs = self._columns, other._columns
        assert columns is not None
        vv, cloud = other._cc.vv, other._cc.cloud
        elements, theirs_entries = columns.elements, other._entries
        lo = 0
        for slot, dot in enumerate(columns.dots):
            if not dot or (dot >> ACTOR_BITS > vv.get(dot & ACTOR_MASK, 0) and dot not in cloud):
                continue
            element = elements[slot]
            if element in theirs_entries:
                continue
            if theirs is not None:
                at = theirs.find(element, lo)
                if at >= 0:
                    lo = at + 1
                    continue
                lo = ~at
            columns.kill(slot)
            if removed is not None:
                removed.append(element)

    def _dot_pairs(self) -> Iterator[tuple[int, int]]:
        """Every held ``(dot, element)``, for a new dot index."""
        for element, dots in self._entries.items():
            if type(dots) is int:
                yield dots, element
            else:
                for dot in dots:  # type: ignore[union-attr]
                    yield dot, element
        columns = self._columns
        if columns is not None:
            yield from compress(zip(columns.dots, columns.elements, strict=True), columns.dots)

    # -- the columns -----------------------------------------------------------------------------

    def _tidy(self) -> None:
        """Compact after a change, if the dict has outgrown its limit or half the column slots are
        dead: one comparison in the common case."""
        columns = self._columns
        if columns is None:
            if len(self._entries) >= storage.COMPACT_MIN:
                self._compact()
        elif len(self._entries) >= columns.limit or 2 * columns.dead > len(columns.elements):
            self._compact()

    def _compact(self) -> None:
        """Move the dict's single-dot elements into the columns, in one sorted pass; then drop the
        dead slots if they are more than half of them (so each drop follows as many removals)."""
        entries = self._entries
        moving = sorted([element for element, dots in entries.items() if type(dots) is int])
        columns = self._columns
        if columns is None:
            columns = self._columns = Columns()
        if moving:
            columns.insert(array("Q", moving), array("Q", map(entries.pop, moving)))  # type: ignore[arg-type]
        if 2 * columns.dead > len(columns.elements):
            columns.drop_dead()
        columns.set_limit(len(entries))

    def _in_order(self, recent: list[tuple[int, Dots]]) -> Iterator[tuple[int, Dots]]:
        """``recent`` (ascending pairs from the dict) and the columns' live pairs, in element order."""
        columns = self._columns
        return iter(recent) if columns is None else columns.interleave(recent)

    # -- queries ---------------------------------------------------------------------------------

    def value(self) -> frozenset[int]:
        """The elements present."""
        columns = self._columns
        if columns is None:
            return frozenset(self._entries)
        return frozenset(chain(self._entries, compress(columns.elements, columns.dots)))

    def __contains__(self, element: object) -> bool:
        if element in self._entries:
            return True
        columns = self._columns
        if columns is None or not isinstance(element, int):
            return False
        elements = columns.elements  # ``find``, inlined: every like asks this first
        if elements and element <= elements[-1]:
            slot = bisect_left(elements, element)
            if elements[slot] == element and columns.dots[slot]:
                return True
        columns.absent = element
        return False

    def __len__(self) -> int:
        columns = self._columns
        return len(self._entries) if columns is None else len(self._entries) + columns.live()

    def __iter__(self) -> Iterator[int]:
        columns = self._columns
        if columns is None:
            return iter(self._entries)
        return chain(self._entries, compress(columns.elements, columns.dots))

    def _held(self, element: int) -> Dots | None:
        """``element``'s dots, or None if absent."""
        held = self._entries.get(element)
        if held is None and self._columns is not None:
            return self._columns.dot_of(element)
        return held

    def held_dots(self, element: int) -> tuple[int, ...]:
        """The dots keeping ``element`` present, packed (empty if absent)."""
        held = self._held(element)
        return () if held is None else _as_tuple(held)

    def dots_of(self, element: int) -> tuple[tuple[str, int], ...]:
        """The ``(actor name, counter)`` of each dot keeping ``element`` present (empty if absent):
        names, not indices, so they can leave the process (a session's causal token carries them)."""
        held = self._held(element)
        if held is None:
            return ()
        return tuple(map(named, _as_tuple(held)))

    def has_seen(self, actor: str, counter: int) -> bool:
        """Whether the dot ``(actor, counter)`` is in the causal context: its add has arrived here
        (and may since have been removed). Never interns ``actor``: it may come from a client."""
        index = known_actor_index(actor)
        return index is not None and 0 < counter <= MAX_COUNTER and self._cc.covers(make_dot(index, counter))

    def has_removed(self, element: int, actor: str, counter: int) -> bool:
        """Whether the removal of ``element``'s dot ``(actor, counter)`` has arrived here: the dot is
        seen and not held. Stays true once true, since a dropped dot is never held again."""
        index = known_actor_index(actor)
        if index is None or not self.has_seen(actor, counter):
            return False
        held = self._held(element)
        return held is None or make_dot(index, counter) not in _as_tuple(held)

    def copy(self) -> ORSet:
        """An independent copy."""
        clone = ORSet()
        clone._entries = self._entries.copy()
        clone._cc = self._cc.copy()
        if self._columns is not None:
            clone._columns = self._columns.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORSet):
            return NotImplemented
        if self._cc != other._cc or len(self) != len(other):
            return False
        if self._columns is None and other._columns is None:
            return self._entries == other._entries
        # Which part holds an element is no part of the state: compare both in element order.
        mine = self._in_order(sorted(self._entries.items()))
        theirs = other._in_order(sorted(other._entries.items()))
        return all(map(operator.eq, mine, theirs))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = [element for element, _ in islice(self._in_order(sorted(self._entries.items())), 10)]
        more = "..." if len(self) > 10 else ""
        return f"ORSet({shown}{more}, len={len(self)})"

    # -- wire form (crdt.orset_wire; framed by crdt.codec) ---------------------------------------

    to_wire = orset_wire.to_wire
    packed_wire = orset_wire.packed_wire

    @classmethod
    def from_wire(cls, wire: Any) -> ORSet:
        """Rebuild from ``to_wire`` form, checking every invariant; raise CodecError if broken."""
        return orset_wire.from_wire(cls, wire)


#: ORSet implements the contract of every CRDT here (checked by mypy).
_CONTRACT: type[ReplicatedData[frozenset[int]]] = ORSet
