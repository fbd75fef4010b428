"""Which element holds a dot: how a big OR-set finds the elements a peer's removal names.

A removal travels as dots alone (the remover's context covers them, its kernel holds none), so
without an index the receiver would test every element it holds. A set builds the index the first
time a small delta meets a big set (``ORSet._drop_removed_by``) and keeps it current from then on.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from crdt.context import CausalContext
from crdt.dots import ACTOR_BITS, ACTOR_MASK

#: Counters further than this past an actor's indexed run go to the sparse part of the index.
_INDEX_MAX_GAP = 4096


class DotIndex:
    """Per actor an ``array('Q')`` of elements indexed by counter (8 bytes a slot and no object:
    counters of one actor are nearly contiguous), with a dict for the rare counter far past the array.

    Slots of removed dots go stale and gaps hold 0, a valid element too: callers check the kernel
    before trusting an answer.
    """

    __slots__ = ("_runs", "_sparse")

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self._runs: dict[int, array[int]] = {}
        self._sparse: dict[int, int] = {}
        self.put_many(pairs)

    def put(self, dot: int, element: int) -> None:
        """Index one ``(dot, element)``."""
        self.put_many(((dot, element),))

    def put_many(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Index each ``(dot, element)``; one call for a whole delta, since calls dominate the cost."""
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
