"""The compact part of a big OR-set's kernel: its single-dot elements in two sorted columns.

An element in the set's dict costs about 104 bytes (a dict slot and two int objects); in two
``array('Q')`` columns, elements ascending in one and their dots at the same slots in the other, it
costs 16 and no object. Recent elements and those of several dots stay in the dict, so the columns
change only by moves: once the dict has grown by ``COMPACT_MIN`` elements or a ``COMPACT_SHARE``th of
the columns, its single-dot elements move over in one sorted pass (``ORSet._compact``). Which part
holds an element is no part of the value: the join, the wire form and equality are the same either way.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, repeat
from typing import TypeVar

#: Elements are unsigned 64-bit ints (user ids): what a column slot holds.
MAX_ELEMENT = (1 << 64) - 1

#: Recent elements a set keeps in its dict before the single-dot ones move to the columns: sets
#: smaller than this never have columns. A module global so that tests can lower it.
COMPACT_MIN = 4096
#: The dict may also grow to this share of the columns before a move, so that moves, each a pass over
#: the columns, cost O(1) amortised per element.
COMPACT_SHARE = 16
#: Column slots copied at a time when the columns are read in order with the dict's elements.
_BLOCK = 4096

_T = TypeVar("_T")


class Columns:
    """The elements held by exactly one dot, ascending, in one ``array('Q')`` and their dots at the
    same slots in another.

    A removed element keeps its slot, with dot 0 (no dot is 0: counters start at 1), so the elements
    stay sorted for ``bisect``; ``insert`` reuses the slot if the element comes back, and
    ``ORSet._compact`` drops the dead slots once they are half of them.
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
        """How many elements are held here."""
        return len(self.elements) - self.dead

    def set_limit(self, recent: int) -> None:
        """The next move, once the dict (``recent`` elements) has grown by ``COMPACT_MIN`` or a
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

    def interleave(self, recent: Iterable[tuple[int, _T]]) -> Iterator[tuple[int, int | _T]]:
        """``recent`` (ascending pairs from the set's dict) and the live pairs here, in element order:
        the slots between two recent elements pass through at C speed."""
        start = 0
        for pair in recent:
            end = bisect_left(self.elements, pair[0], start)
            yield from self.pairs(start, end)
            yield pair
            start = end
        yield from self.pairs(start)

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

    def copy(self) -> Columns:
        """An independent copy."""
        clone = Columns(self.elements[:], self.dots[:])
        clone.dead, clone.limit = self.dead, self.limit
        return clone
