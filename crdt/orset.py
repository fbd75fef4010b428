"""Add-wins observed-remove set without tombstones, delta-enabled: who liked an item.

The state is a dot kernel plus a causal context (Almeida, Shoker, Baquero, *Delta State Replicated
Data Types*, 2016, the AWORSet of section 7; riak_dt's ORSWOT is the state-based relative):

- ``_entries`` maps each present element to the dots of the adds that made it present;
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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import pairwise
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


class _DotIndex:
    """Which element holds a dot, so a removal arriving from a peer is found without a scan.

    Per actor a list indexed by counter (8 bytes a slot; counters of one actor are nearly
    contiguous), with a dict for the rare counter far past the list. Slots of removed dots go stale:
    callers check the kernel before trusting an answer.
    """

    __slots__ = ("_runs", "_sparse")

    def __init__(self, entries: dict[int, Dots]) -> None:
        self._runs: dict[int, list[int | None]] = {}
        self._sparse: dict[int, int] = {}
        for element, dots in entries.items():
            if type(dots) is int:
                self.put(dots, element)
            else:
                for dot in dots:  # type: ignore[union-attr]
                    self.put(dot, element)

    def put(self, dot: int, element: int) -> None:
        self.put_many(((dot, element),))

    def put_many(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Index each (dot, element); one call for a whole delta, since calls dominate the cost."""
        runs, sparse = self._runs, self._sparse
        actor = -1
        run: list[int | None] = [None]
        for dot, element in pairs:
            counter = dot >> ACTOR_BITS
            if dot & ACTOR_MASK != actor:  # a delta's dots mostly come from one actor in a row
                actor = dot & ACTOR_MASK
                run = runs.setdefault(actor, [None])
            size = len(run)
            if counter == size:  # the usual case: the actor's next dot
                run.append(element)
            elif counter < size:
                run[counter] = element
            elif counter - size <= _INDEX_MAX_GAP:
                run.extend([None] * (counter - size))
                run.append(element)
            else:
                sparse[dot] = element

    def elements_covered_by(self, cc: CausalContext) -> set[int | None]:
        """The elements that held, at some point, a dot ``cc`` covers (None stands for gaps)."""
        runs = self._runs
        found: set[int | None] = set()
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

    __slots__ = ("_cc", "_entries", "_index")

    def __init__(self) -> None:
        self._entries: dict[int, Dots] = {}
        self._cc = CausalContext()
        self._index: _DotIndex | None = None

    # -- mutators: change the state in place and return the delta --------------------------------

    def add(self, actor: str, element: int) -> ORSet:
        """Add ``element`` as ``actor``; return the delta (an independent ORSet)."""
        return ORSet.of_dots(((element, self.add_dot(actor, element)),))

    def add_dot(self, actor: str, element: int) -> int:
        """Add ``element`` as ``actor`` and return the new dot alone: ``of_dots`` makes deltas of
        many such dots at once, cheaper than one delta per add."""
        check_element(element)
        dot = self._cc.next_dot(actor_index(actor))
        self._cc.add(dot)
        held = self._entries.get(element)
        self._entries[element] = dot if held is None else tuple(sorted((*_as_tuple(held), dot)))
        if self._index is not None:
            self._index.put(dot, element)
        return dot

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

    def remove(self, element: int) -> ORSet:
        """Remove ``element``; return the delta (empty if it was absent)."""
        check_element(element)
        delta = ORSet()
        held = self._entries.pop(element, None)
        if held is not None:
            for dot in _as_tuple(held):
                delta._cc.add(dot)
        return delta

    # -- join ------------------------------------------------------------------------------------

    def merge(self, other: ORSet, removed: list[int] | None = None) -> None:
        """Join ``other`` (a full state or a delta) into this set, in place; the elements the join
        took out go to ``removed`` when given (what a reverse index must forget, found without
        comparing the set before and after)."""
        if not isinstance(other, ORSet):
            raise TypeError(f"cannot merge {type(other).__name__} into ORSet")
        if other is self:
            return
        theirs = other._entries
        held = len(theirs)
        if len(theirs) < len(self._entries):  # a delta: counting its dots first is cheap
            held += sum(len(dots) - 1 for dots in theirs.values() if not isinstance(dots, int))
            # Removals first: they touch only elements ``other`` does not hold, the join only those
            # it does, so the order is free, and the dot index does not yet list the dots just added.
            if other._cc.size() > held:  # other has seen dots it no longer holds: it removed something
                self._drop_removed_by(other, removed)
            self._join_held_by(other, removed)
        elif other._cc.size() > self._join_held_by(other, removed):
            self._drop_removed_by(other, removed)
        self._cc.join(other._cc)

    def _join_held_by(self, other: ORSet, removed: list[int] | None) -> int:
        """Join the elements ``other`` holds; return how many dots it holds."""
        entries, cc, index = self._entries, self._cc, self._index
        vv, cloud = cc.vv, cc.cloud
        held = len(other._entries)
        indexed: list[tuple[int, int]] = []
        for element, theirs in other._entries.items():
            ours = entries.get(element)
            if ours == theirs:
                if type(theirs) is not int:
                    held += len(theirs) - 1  # type: ignore[arg-type]
                continue
            if ours is None and type(theirs) is int:
                # The hot path: a new single dot, kept unless we saw it and dropped it already.
                if theirs >> ACTOR_BITS <= vv.get(theirs & ACTOR_MASK, 0) or theirs in cloud:
                    continue
                entries[element] = theirs
                if index is not None:
                    indexed.append((theirs, element))
                continue
            ours_t = () if ours is None else _as_tuple(ours)
            theirs_t = _as_tuple(theirs)
            held += len(theirs_t) - 1
            kept = [d for d in ours_t if d in theirs_t or not other._cc.covers(d)]
            new = [d for d in theirs_t if d not in ours_t and not cc.covers(d)]
            joined = _pack(kept + new)
            if joined is None:
                if entries.pop(element, None) is not None and removed is not None:
                    removed.append(element)
                continue
            entries[element] = joined
            if index is not None:
                indexed.extend((dot, element) for dot in new)
        if index is not None and indexed:
            index.put_many(indexed)
        return held

    def _drop_removed_by(self, other: ORSet, removed: list[int] | None) -> None:
        """Drop the dots of elements ``other`` does not hold but whose dots it has seen."""
        entries, theirs_entries, theirs_cc = self._entries, other._entries, other._cc
        if not entries or (not theirs_cc.vv and not theirs_cc.cloud):
            return
        seen = theirs_cc.size()
        if len(entries) >= _SCAN_BELOW and seen * 4 < len(entries):
            # A delta: visit the few dots it covers instead of every element we hold.
            if self._index is None:
                self._index = _DotIndex(entries)
            candidates = self._index.elements_covered_by(theirs_cc)
        else:
            candidates = set(entries)
        for element in candidates:
            if element is None or element in theirs_entries:
                continue
            ours = entries.get(element)
            if ours is None:
                continue
            if type(ours) is int:
                if theirs_cc.covers(ours):
                    del entries[element]
                    if removed is not None:
                        removed.append(element)
                continue
            kept = _pack([d for d in ours if not theirs_cc.covers(d)])  # type: ignore[union-attr]
            if kept is None:
                del entries[element]
                if removed is not None:
                    removed.append(element)
            elif kept != ours:
                entries[element] = kept

    # -- queries ---------------------------------------------------------------------------------

    def value(self) -> frozenset[int]:
        """The elements present."""
        return frozenset(self._entries)

    def __contains__(self, element: object) -> bool:
        return element in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def dots_of(self, element: int) -> tuple[tuple[str, int], ...]:
        """The ``(actor name, counter)`` of each dot keeping ``element`` present (empty if absent):
        names, not indices, so they can leave the process (a session's causal token carries them)."""
        held = self._entries.get(element)
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
        held = self._entries.get(element)
        return held is None or make_dot(index, counter) not in _as_tuple(held)

    def copy(self) -> ORSet:
        """An independent copy."""
        clone = ORSet()
        clone._entries = self._entries.copy()
        clone._cc = self._cc.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORSet):
            return NotImplemented
        return self._entries == other._entries and self._cc == other._cc

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = sorted(self._entries)[:10]
        more = "..." if len(self._entries) > 10 else ""
        return f"ORSet({shown}{more}, len={len(self._entries)})"

    # -- wire form (framed by crdt.codec) --------------------------------------------------------

    def to_wire(self) -> list[Any]:
        """A deterministic msgpack-ready form: names sorted, dots and elements in order.

        ``[actors, vv, cloud, singles, multiples]`` with flat int lists: ``vv`` and ``cloud`` are
        ``actor, counter`` pairs, ``singles`` are ``element, actor, counter`` triples, ``multiples``
        are ``element, n, (actor, counter) * n`` runs. Actors are positions in ``actors``.
        """
        cc = self._cc
        if len(self._entries) == 1 and len(cc.cloud) == 1 and not cc.vv:
            # The delta of one like: the general path below gives exactly this, six sorts later.
            ((element, dots),) = self._entries.items()
            (dot,) = cc.cloud
            if dots == dot:
                counter = dot >> ACTOR_BITS
                return [[actor_name(dot & ACTOR_MASK)], [], [0, counter], [element, 0, counter], []]
        return self._to_wire_general()

    def _to_wire_general(self) -> list[Any]:
        cc = self._cc
        used = set(cc.vv) | {d & ACTOR_MASK for d in cc.cloud}
        names = sorted(actor_name(a) for a in used)
        local = {actor_index(name): position for position, name in enumerate(names)}

        def key(dot: int) -> tuple[int, int]:
            return local[dot & ACTOR_MASK], dot >> ACTOR_BITS

        vv = [x for a, c in sorted((local[a], c) for a, c in cc.vv.items()) for x in (a, c)]
        cloud = [x for d in sorted(cc.cloud, key=key) for x in key(d)]
        singles: list[int] = []
        multiples: list[int] = []
        for element in sorted(self._entries):
            dots = self._entries[element]
            if type(dots) is int:
                singles.extend((element, local[dots & ACTOR_MASK], dots >> ACTOR_BITS))
            else:
                multiples.extend((element, len(dots)))  # type: ignore[arg-type]
                for dot in sorted(dots, key=key):  # type: ignore[arg-type]
                    multiples.extend(key(dot))
        return [names, vv, cloud, singles, multiples]

    def packed_wire(self) -> bytes:
        """``msgpack.packb(self.to_wire())``, the same bytes, packed ``PACK_CHUNK`` elements at a time.

        ``to_wire`` of a million-liker set builds a flat list of three million ints, a million of
        them new (the counters): about 60 MB at once, which a node's RSS keeps once the freed ints
        are scattered among live ones. Here only one chunk's ints exist at a time.
        """
        cc, entries = self._cc, self._entries
        used = set(cc.vv) | {d & ACTOR_MASK for d in cc.cloud}
        names = sorted(actor_name(a) for a in used)
        local = {actor_index(name): position for position, name in enumerate(names)}

        def key(dot: int) -> tuple[int, int]:
            return local[dot & ACTOR_MASK], dot >> ACTOR_BITS

        packer = msgpack.Packer(use_bin_type=True)
        vv = [x for a, c in sorted((local[a], c) for a, c in cc.vv.items()) for x in (a, c)]
        cloud = [x for d in sorted(cc.cloud, key=key) for x in key(d)]
        multiples: list[int] = []
        order = sorted(entries)
        for element in order:
            dots = entries[element]
            if type(dots) is not int:
                multiples.extend((element, len(dots)))  # type: ignore[arg-type]
                for dot in sorted(dots, key=key):  # type: ignore[arg-type]
                    multiples.extend(key(dot))
        pieces = [packer.pack_array_header(5), packer.pack(names), packer.pack(vv), packer.pack(cloud)]
        pieces.append(b"")  # the singles header, once their number is known
        header_at, count = len(pieces) - 1, 0
        for start in range(0, len(order), PACK_CHUNK):
            flat: list[int] = []
            for element in order[start : start + PACK_CHUNK]:
                dots = entries[element]
                if type(dots) is int:
                    flat.extend((element, local[dots & ACTOR_MASK], dots >> ACTOR_BITS))
            if flat:
                packed = packer.pack(flat)
                pieces.append(packed[len(packer.pack_array_header(len(flat))) :])
                count += len(flat)
        pieces[header_at] = packer.pack_array_header(count)
        pieces.append(packer.pack(multiples))
        return b"".join(pieces)

    @classmethod
    def from_wire(cls, wire: Any) -> ORSet:
        """Rebuild from ``to_wire`` form, checking every invariant; raise CodecError if broken."""
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
            entries[singles[i]] = dot

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
            seen.update(dots)
            entries[element] = tuple(sorted(dots))
            i += 2 + 2 * count
        if len(entries) != len(singles) // 3 + len(elements):
            raise CodecError("ORSet: an element is listed twice")
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
