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
elements and those of several dots, and ``_columns``, two sorted ``array('Q')`` of elements and their
one dot (16 bytes a like instead of about 104: a dict slot and two int objects). Once the dict has
grown by ``COMPACT_MIN`` elements or a ``COMPACT_SHARE``th of the columns, its single-dot elements
move into the columns in one sorted pass. Which part holds an element is no part of the value: the
join, the wire form and equality are the same either way.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, compress, islice, pairwise, repeat
from typing import Any

import msgpack

from crdt.context import CausalContext
from crdt.dots import (
    ACTOR_BITS,
    ACTOR_MASK,
    MAX_ACTOR_NAME,
    MAX_COUNTER,
    actor_index,
    actor_name,
    known_actor_index,
    make_dot,
    valid_actor_name,
)
from crdt.errors import CodecError

#: Elements packed per chunk by ``packed_wire``: its transient objects are one chunk's, not the set's.
PACK_CHUNK = 4096

MAX_ELEMENT = (1 << 64) - 1

#: A present element's dots: one int in the common case, a sorted tuple when adds were concurrent.
Dots = int | tuple[int, ...]

#: Below this size a removal arriving from a peer is found by scanning the kernel; above it, by index.
_SCAN_BELOW = 64
#: Counters further than this past an actor's indexed run go to the sparse part of the index.
_INDEX_MAX_GAP = 4096

#: Recent elements a set keeps in its dict before the single-dot ones move to the columns (16 bytes an
#: element there, about 104 in the dict): sets smaller than this never have columns. Tests lower it.
COMPACT_MIN = 4096
#: The dict may also grow to this share of the columns before a move, so that moves, each a pass over
#: the columns, cost O(1) amortised per element.
COMPACT_SHARE = 16
#: Column slots copied at a time when the columns are read in order with the dict's elements.
_BLOCK = 4096


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


class _Columns:
    """The compact part of a big set: the elements held by exactly one dot, ascending, in one
    ``array('Q')`` and their dots at the same slots in another: 16 bytes an element and no object.

    A removed element keeps its slot, with dot 0 (no dot is 0: counters start at 1), so the elements
    stay sorted for ``bisect``; ``ORSet._compact`` reuses the slot if the element comes back, and
    drops the dead slots once they are half of them.
    """

    __slots__ = ("absent", "dead", "dots", "elements", "limit")

    def __init__(self, elements: array[int] | None = None, dots: array[int] | None = None) -> None:
        self.elements: array[int] = array("Q") if elements is None else elements
        self.dots: array[int] = array("Q") if dots is None else dots
        #: Slots whose dot is 0.
        self.dead = 0
        #: The size of the set's dict that triggers the next move (``ORSet._tidy``).
        self.limit = 0
        #: The last element ``ORSet.__contains__`` found absent here, until ``insert``: so the like
        #: that follows the check (``ORSet.add_dot``) does not search the columns again.
        self.absent = -1

    def live(self) -> int:
        return len(self.elements) - self.dead

    def set_limit(self, recent: int) -> None:
        """The next move, once the dict (now ``recent`` elements) has grown by ``COMPACT_MIN`` or a
        ``COMPACT_SHARE``th of the columns, whichever is more."""
        self.limit = recent + max(COMPACT_MIN, self.live() // COMPACT_SHARE)

    def find(self, element: int, lo: int = 0) -> int:
        """The slot of ``element`` if it is live here, else ``~slot`` of the slot it would take.

        ``lo`` is a slot known to be no later than the answer: lookups in ascending order pass one
        past the last answer, which is the answer itself when both sides hold the same elements.
        """
        elements = self.elements
        size = len(elements)
        if lo >= size or element > elements[-1]:
            return ~size
        at = elements[lo]
        if at < element:
            lo = bisect_left(elements, element, lo + 1)
            at = elements[lo]  # lo < size: element <= elements[-1]
        if at != element or not self.dots[lo]:
            return ~lo
        return lo

    def dot_of(self, element: int) -> int | None:
        """The dot of ``element`` if it is live here."""
        slot = self.find(element)
        return self.dots[slot] if slot >= 0 else None

    def kill(self, slot: int) -> None:
        """The element of ``slot`` is no longer held here."""
        self.dots[slot] = 0
        self.dead += 1

    def take(self, element: int) -> int | None:
        """Take ``element`` out if it is live here; its dot, or None."""
        slot = self.find(element)
        if slot < 0:
            return None
        dot = self.dots[slot]
        self.kill(slot)
        return dot

    def pairs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """The live ``(element, dot)`` of slots ``start:end`` in order, copying ``_BLOCK`` slots at a
        time (slicing the whole columns would copy megabytes for one pass)."""
        elements, dots = self.elements, self.dots
        end = len(elements) if end is None else end
        for lo in range(start, end, _BLOCK):
            hi = min(lo + _BLOCK, end)
            run = dots[lo:hi]
            yield from compress(zip(elements[lo:hi], run, strict=True), run)

    def drop_dead(self) -> None:
        """Drop the dead slots (at C speed: ``compress`` and ``filter`` skip the zero dots)."""
        dots = self.dots
        self.elements = array("Q", compress(self.elements, dots))
        self.dots = array("Q", filter(None, dots))
        self.dead = 0

    def insert(self, elements: array[int], dots: array[int]) -> None:
        """Add ascending ``elements`` (none live here) with their ``dots``, in place: those past the
        last slot (all of them when ids only grow) by one append, the others by ``_insert_among``."""
        self.absent = -1
        mine = self.elements
        past = bisect_right(elements, mine[-1]) if mine else 0
        if past:
            self._insert_among(elements, dots, past)
        if past == len(elements):
            return
        mine.extend(elements[past:] if past else elements)
        self.dots.extend(dots[past:] if past else dots)

    def _insert_among(self, elements: array[int], dots: array[int], end: int) -> None:
        """Add ``elements[:end]``, none past the last slot: an element's dead slot is reused, the others
        go in from the back, so each run of old slots moves once, by a slice assignment (a memmove):
        O(columns) bytes moved, O(added) Python steps."""
        mine, my_dots = self.elements, self.dots
        size = len(mine)
        slots = list(map(bisect_left, repeat(mine), elements[:end]))  # where each goes, among the old
        fresh: Sequence[int] = range(end)  # which element goes to each of ``slots``
        if self.dead:  # an element may come back to its dead slot
            fresh = [i for i in fresh if mine[slots[i]] != elements[i]]
            for i in set(range(end)).difference(fresh):
                my_dots[slots[i]] = dots[i]
                self.dead -= 1
            slots = [slots[i] for i in fresh]
        room = bytes(8 * len(slots))
        mine.frombytes(room)
        my_dots.frombytes(room)
        end = size
        for shift in range(len(slots), 0, -1):
            slot, i = slots[shift - 1], fresh[shift - 1]
            if slot < end:
                mine[slot + shift : end + shift] = mine[slot:end]
                my_dots[slot + shift : end + shift] = my_dots[slot:end]
            mine[slot + shift - 1] = elements[i]
            my_dots[slot + shift - 1] = dots[i]
            end = slot

    def copy(self) -> _Columns:
        clone = _Columns(self.elements[:], self.dots[:])
        clone.dead, clone.limit = self.dead, self.limit
        return clone


class _DotIndex:
    """Which element holds a dot, so a removal arriving from a peer is found without a scan.

    Per actor an ``array('Q')`` indexed by counter (8 bytes a slot and no object: counters of one
    actor are nearly contiguous), with a dict for the rare counter far past the array. Slots of
    removed dots go stale and gaps hold 0, a valid element too: callers check the kernel before
    trusting an answer.
    """

    __slots__ = ("_runs", "_sparse")

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self._runs: dict[int, array[int]] = {}
        self._sparse: dict[int, int] = {}
        self.put_many(pairs)

    def put(self, dot: int, element: int) -> None:
        self.put_many(((dot, element),))

    def put_many(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Index each (dot, element); one call for a whole delta, since calls dominate the cost."""
        runs, sparse = self._runs, self._sparse
        actor = -1
        run = array("Q")
        for dot, element in pairs:
            counter = dot >> ACTOR_BITS
            if dot & ACTOR_MASK != actor:  # a delta's dots mostly come from one actor in a row
                actor = dot & ACTOR_MASK
                found = runs.get(actor)
                run = runs[actor] = array("Q", (0,)) if found is None else found
            size = len(run)
            if counter == size:  # the usual case: the actor's next dot
                run.append(element)
            elif counter < size:
                run[counter] = element
            elif counter - size <= _INDEX_MAX_GAP:
                run.frombytes(bytes(8 * (counter - size)))
                run.append(element)
            else:
                sparse[dot] = element

    def elements_covered_by(self, cc: CausalContext) -> set[int]:
        """The elements that held, at some point, a dot ``cc`` covers (and maybe 0, from gaps)."""
        runs = self._runs
        found: set[int] = set()
        for actor, top in cc.vv.items():
            run = runs.get(actor)
            if run is not None:
                found.update(run[1 : top + 1])  # a slice: the whole range at C speed
        for dot in cc.cloud:
            run = runs.get(dot & ACTOR_MASK)
            counter = dot >> ACTOR_BITS
            if run is not None and counter < len(run):
                found.add(run[counter])
        found.update(element for dot, element in self._sparse.items() if cc.covers(dot))
        return found


class ORSet:
    """An add-wins observed-remove set of unsigned 64-bit ints; see the module docstring."""

    __slots__ = ("_cc", "_columns", "_entries", "_index")

    def __init__(self) -> None:
        self._entries: dict[int, Dots] = {}
        self._cc = CausalContext()
        self._index: _DotIndex | None = None
        self._columns: _Columns | None = None

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
        if len(entries) >= (COMPACT_MIN if columns is None else columns.limit) or held is not None:
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
                self._index = _DotIndex(self._dot_pairs())
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
            if len(self._entries) >= COMPACT_MIN:
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
            columns = self._columns = _Columns()
        if moving:
            columns.insert(array("Q", moving), array("Q", map(entries.pop, moving)))  # type: ignore[arg-type]
        if 2 * columns.dead > len(columns.elements):
            columns.drop_dead()
        columns.set_limit(len(entries))

    def _in_order(self, recent: list[tuple[int, Dots]]) -> Iterator[tuple[int, Dots]]:
        """``recent`` (ascending pairs from the dict) and the columns' live pairs, in element order:
        the column slots between two recent elements pass through at C speed."""
        columns = self._columns
        if columns is None:
            yield from recent
            return
        start = 0
        for pair in recent:
            end = bisect_left(columns.elements, pair[0], start)
            yield from columns.pairs(start, end)
            yield pair
            start = end
        yield from columns.pairs(start)

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
        return tuple((actor_name(dot & ACTOR_MASK), dot >> ACTOR_BITS) for dot in _as_tuple(held))

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

    # -- wire form (framed by crdt.codec) --------------------------------------------------------

    def to_wire(self) -> list[Any]:
        """A deterministic msgpack-ready form: names sorted, dots and elements in order.

        ``[actors, vv, cloud, singles, multiples]`` with flat int lists: ``vv`` and ``cloud`` are
        ``actor, counter`` pairs, ``singles`` are ``element, actor, counter`` triples, ``multiples``
        are ``element, n, (actor, counter) * n`` runs. Actors are positions in ``actors``.
        """
        cc = self._cc
        if len(self._entries) == 1 and len(cc.cloud) == 1 and not cc.vv and self._columns is None:
            # The delta of one like: the general path below gives exactly this, six sorts later.
            ((element, dots),) = self._entries.items()
            (dot,) = cc.cloud
            if dots == dot:
                counter = dot >> ACTOR_BITS
                return [[actor_name(dot & ACTOR_MASK)], [], [0, counter], [element, 0, counter], []]
        return self._to_wire_general()

    def _wire_actors(self) -> tuple[list[str], dict[int, int], list[int], list[int]]:
        """The wire's actor names, each actor's position among them, and the flat vv and cloud."""
        cc = self._cc
        used = set(cc.vv) | {d & ACTOR_MASK for d in cc.cloud}
        names = sorted(actor_name(a) for a in used)
        local = {actor_index(name): position for position, name in enumerate(names)}
        vv = [x for a, c in sorted((local[a], c) for a, c in cc.vv.items()) for x in (a, c)]
        cloud = sorted((local[d & ACTOR_MASK], d >> ACTOR_BITS) for d in cc.cloud)
        return names, local, vv, [x for pair in cloud for x in pair]

    def _multiples(self, local: dict[int, int]) -> list[int]:
        """The wire's ``multiples``: only the dict holds elements of several dots."""
        multiples: list[int] = []
        for element, dots in sorted((e, d) for e, d in self._entries.items() if type(d) is not int):
            multiples.extend((element, len(dots)))  # type: ignore[arg-type]
            for a, c in sorted((local[d & ACTOR_MASK], d >> ACTOR_BITS) for d in dots):  # type: ignore[union-attr]
                multiples.extend((a, c))
        return multiples

    def _singles(self) -> Iterator[tuple[int, int]]:
        """The single-dot ``(element, dot)`` pairs, ascending, from both parts."""
        recent = sorted((e, d) for e, d in self._entries.items() if type(d) is int)
        return self._in_order(recent)  # type: ignore[arg-type, return-value]

    def _to_wire_general(self) -> list[Any]:
        names, local, vv, cloud = self._wire_actors()
        singles = [x for e, d in self._singles() for x in (e, local[d & ACTOR_MASK], d >> ACTOR_BITS)]
        return [names, vv, cloud, singles, self._multiples(local)]

    def packed_wire(self) -> bytes:
        """``msgpack.packb(self.to_wire())``, the same bytes, packed ``PACK_CHUNK`` elements at a time.

        ``to_wire`` of a million-liker set builds a flat list of three million ints, a million of
        them new (the counters): about 60 MB at once, which a node's RSS keeps once the freed ints
        are scattered among live ones. Here only one chunk's ints exist at a time.
        """
        names, local, vv, cloud = self._wire_actors()
        packer = msgpack.Packer(use_bin_type=True)
        pieces = [packer.pack_array_header(5), packer.pack(names), packer.pack(vv), packer.pack(cloud)]
        pieces.append(b"")  # the singles header, once their number is known
        header_at, count = len(pieces) - 1, 0
        singles = self._singles()
        while chunk := list(islice(singles, PACK_CHUNK)):
            flat = [x for e, d in chunk for x in (e, local[d & ACTOR_MASK], d >> ACTOR_BITS)]
            packed = packer.pack(flat)
            pieces.append(packed[len(packer.pack_array_header(len(flat))) :])
            count += len(flat)
        pieces[header_at] = packer.pack_array_header(count)
        pieces.append(packer.pack(self._multiples(local)))
        return b"".join(pieces)

    @classmethod
    def from_wire(cls, wire: Any) -> ORSet:
        """Rebuild from ``to_wire`` form, checking every invariant; raise CodecError if broken.

        Singles as many as ``COMPACT_MIN`` go straight into the columns: they arrive sorted.
        """
        if type(wire) is not list or len(wire) != 5 or not all(type(part) is list for part in wire):
            raise CodecError("ORSet: expected five lists")
        names, vv, cloud, singles, multiples = wire
        actors = _actor_table(names)
        state = cls()
        cc = state._cc
        for actor, counter in _pairs(vv, actors, "vv"):
            cc.vv[actor] = counter
        for actor, counter in _pairs(cloud, actors, "cloud"):
            cc.add(make_dot(actor, counter))
        entries = state._entries
        seen: set[int] = set()

        if len(singles) % 3:
            raise CodecError("ORSet: singles must be element, actor, counter triples")
        _check_ascending(singles[0::3])
        columnar = len(singles) // 3 >= COMPACT_MIN
        single_dots = array("Q")
        n_actors = len(actors)
        for i in range(0, len(singles), 3):
            local, counter = singles[i + 1], singles[i + 2]
            if type(local) is not int or not 0 <= local < n_actors:
                raise CodecError("ORSet: singles name an unknown actor")
            if type(counter) is not int or not 0 < counter <= MAX_COUNTER:
                raise CodecError("ORSet: singles have a counter out of range")
            dot = counter << ACTOR_BITS | actors[local]
            if dot in seen or not cc.covers(dot):
                raise CodecError("ORSet: a dot is repeated or outside the causal context")
            seen.add(dot)
            if columnar:
                single_dots.append(dot)
            else:
                entries[singles[i]] = dot
        columns = state._columns = _Columns(array("Q", singles[0::3]), single_dots) if columnar else None

        elements: list[Any] = []
        i = 0
        while i < len(multiples):
            count = multiples[i + 1] if i + 1 < len(multiples) else None
            if type(count) is not int or count < 2 or i + 2 + 2 * count > len(multiples):
                raise CodecError("ORSet: bad dot count in multiples")
            element = multiples[i]
            elements.append(element)
            _check_ascending(elements[-2:])
            dots = [make_dot(a, c) for a, c in _pairs(multiples[i + 2 : i + 2 + 2 * count], actors, "dots")]
            if any(dot in seen or not cc.covers(dot) for dot in dots) or len(set(dots)) != count:
                raise CodecError("ORSet: a dot is repeated or outside the causal context")
            if columns is not None and columns.find(element) >= 0:
                raise CodecError("ORSet: an element is listed twice")
            seen.update(dots)
            entries[element] = tuple(sorted(dots))
            i += 2 + 2 * count
        if len(entries) != (0 if columnar else len(singles) // 3) + len(elements):
            raise CodecError("ORSet: an element is listed twice")
        if columns is not None:
            columns.set_limit(len(entries))
        return state


def _check_ascending(elements: list[Any]) -> None:
    """Raise CodecError unless ``elements`` are unsigned 64-bit ints in strictly ascending order."""
    if not all(type(e) is int and 0 <= e <= MAX_ELEMENT for e in elements):
        raise CodecError("ORSet: elements must be unsigned 64-bit ints")
    if any(a >= b for a, b in pairwise(elements)):
        raise CodecError("ORSet: elements must be strictly ascending")


def _actor_table(names: list[Any]) -> list[int]:
    """Intern the wire's actor names (strictly ascending) and return their process indices."""
    if not all(valid_actor_name(name) for name in names):
        raise CodecError(f"actor names must be non-empty strings of at most {MAX_ACTOR_NAME} chars")
    if any(a >= b for a, b in pairwise(names)):
        raise CodecError("actor names must be strictly ascending")
    try:
        return [actor_index(name) for name in names]
    except ValueError as exc:
        raise CodecError(str(exc)) from exc


def _pairs(flat: list[Any], actors: list[int], part: str) -> Iterator[tuple[int, int]]:
    """Yield (actor index, counter) from a flat ``actor, counter`` list, validating each."""
    if len(flat) % 2:
        raise CodecError(f"ORSet: {part} must be actor, counter pairs")
    for i in range(0, len(flat), 2):
        local, counter = flat[i], flat[i + 1]
        if type(local) is not int or not 0 <= local < len(actors):
            raise CodecError(f"ORSet: {part} names an unknown actor")
        if type(counter) is not int or not 0 < counter <= MAX_COUNTER:
            raise CodecError(f"ORSet: {part} has a counter out of range")
        yield actors[local], counter
