"""A small OR-set in one ``bytes`` value: the form of the long tail's items at rest.

Most items of a catalogue have a few likers. As an ``ORSet`` such an item costs over a kilobyte (the
set, its dict, its causal context's dict and set); packed it costs one ``bytes`` object, 33 bytes of
header and 16 a liker::

    [n] [vv entry] * n [element] * k [dot] * k

``n`` one byte; every other field an unsigned 64-bit native int: a version-vector entry as the dot
``(actor, counter)``, the elements ascending, the dot of each at the same position. So a one-like
item is 58 bytes. Actor indices are this process's (``crdt.dots``): the form never leaves the process,
encodings go through ``ORSet``.

A set packs (``pack``) when it is small (``MAX_ELEMENTS``), every element holds one dot and its
context is a version vector alone: what a set made of sequential likes is (dots count per item and
writer). Anything else (concurrent adds of one element, dots seen out of order) stays an ``ORSet``
until it packs again. The functions here answer the store's hot questions on the packed value and
take a like in place of a new value; everything else unpacks (``unpack``), which is exact: ``pack``
and ``unpack`` are inverse, and a join is the ``ORSet`` join of the unpacked values.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from typing import Any

from crdt.columns import MAX_ELEMENT
from crdt.context import CausalContext
from crdt.dots import ACTOR_BITS, ACTOR_MASK, COUNTER_STEP, MAX_COUNTER, actor_index, actor_name, make_dot
from crdt.errors import CodecError
from crdt.orset import ORSet
from crdt.orset_wire import actor_table, check_ascending

#: Elements a packed set holds at most: inserting into it copies the value, 16 bytes an element. A
#: module global read at call time, so that tests can lower it (below 0: nothing packs).
MAX_ELEMENTS = 64
#: Version-vector entries a packed set holds at most (its count is one byte).
MAX_ACTORS = 255

#: The empty set, packed.
EMPTY = b"\x00"


def pack(s: ORSet) -> bytes | None:
    """``s`` packed, or None when it is not small (see the module docstring)."""
    entries, cc = s._entries, s._cc
    if (
        s._columns is not None
        or cc.cloud
        or len(entries) > MAX_ELEMENTS
        or len(cc.vv) > MAX_ACTORS
        or any(type(dots) is not int for dots in entries.values())
    ):
        return None
    elements = sorted(entries)
    return _build(
        array("Q", [counter << ACTOR_BITS | actor for actor, counter in sorted(cc.vv.items())]),
        array("Q", elements),
        array("Q", [entries[element] for element in elements]),  # type: ignore[misc]
    )


def unpack(packed: bytes) -> ORSet:
    """The ``ORSet`` ``packed`` holds."""
    vv, elements, dots = _parts(packed)
    s = ORSet()
    s._entries = dict(zip(elements, dots, strict=True))
    s._cc = cc = CausalContext()
    cc.vv = {dot & ACTOR_MASK: dot >> ACTOR_BITS for dot in vv}
    return s


def size(packed: bytes) -> int:
    """How many elements ``packed`` holds."""
    return (len(packed) - 1 - 8 * packed[0]) >> 4


def contains(packed: bytes, element: int) -> bool:
    """Whether ``element`` is in ``packed``."""
    return _find(packed, element) >= 0


def dot_of(packed: bytes, element: int) -> int | None:
    """The dot holding ``element`` in ``packed``, or None if absent."""
    at = _find(packed, element)
    if at < 0:
        return None
    _, _, dots = _parts(packed)
    return dots[at]


def elements(packed: bytes) -> list[int]:
    """The elements of ``packed``, ascending."""
    return _parts(packed)[1].tolist()


def next_dot(packed: bytes, actor: int) -> int:
    """``ORSet.next_dot`` of the packed set, for the actor index ``actor``."""
    for dot in _parts(packed)[0]:
        if dot & ACTOR_MASK == actor:
            return dot + COUNTER_STEP
    return make_dot(actor, 1)


def insert(packed: bytes, element: int, dot: int) -> bytes | None:
    """``ORSet.insert`` of the packed set: the new value, ``packed`` itself when the dot was seen,
    or None when the result is not small (the caller unpacks and inserts)."""
    actor, counter = dot & ACTOR_MASK, dot >> ACTOR_BITS
    if packed == EMPTY:  # a like of a new item
        return _one(dot, element, dot) if counter == 1 and MAX_ELEMENTS > 0 else None
    vv, elements, dots = _parts(packed)
    for slot, seen in enumerate(vv):
        if seen & ACTOR_MASK == actor:
            if counter <= seen >> ACTOR_BITS:
                return packed
            if counter != (seen >> ACTOR_BITS) + 1:
                return None  # out of order: the context needs a cloud
            vv[slot] = dot
            break
    else:
        if counter != 1 or len(vv) >= MAX_ACTORS:
            return None
        vv.insert(bisect_left([d & ACTOR_MASK for d in vv], actor), dot)
    at = bisect_left(elements, element)
    if (at < len(elements) and elements[at] == element) or len(elements) >= MAX_ELEMENTS:
        return None  # a second dot for the element, or too big
    elements.insert(at, element)
    dots.insert(at, dot)
    return _build(vv, elements, dots)


def one_like(packed: bytes) -> tuple[str, int, int, int] | None:
    """``(writer, top, element, counter)`` when ``packed`` is one element liked under one writer's
    dot ``(writer, counter)``, its context that writer's ``1..top``; None for any other set."""
    if len(packed) != _ONE.size + 1 or packed[0] != 1:
        return None
    context, element, dot = _ONE.unpack_from(packed, 1)
    return actor_name(context & ACTOR_MASK), context >> ACTOR_BITS, element, dot >> ACTOR_BITS


def from_one_like(writer: Any, top: Any, element: Any, counter: Any) -> bytes | None:
    """The packed set ``one_like`` describes, or None if the values cannot be one (checked as the
    wire form's are)."""
    return _one_like(writer, [0, top], [element, 0, counter])


def to_wire(packed: bytes) -> list[Any]:
    """``ORSet.to_wire`` of the packed set, the same list, without unpacking it (an item's digest and
    state are its encoding: a node digests every item it holds)."""
    if len(packed) == _ONE.size + 1 and packed[0] == 1:  # one like by one writer: most items
        context, element, dot = _ONE.unpack_from(packed, 1)
        name = actor_name(context & ACTOR_MASK)
        return [[name], [0, context >> ACTOR_BITS], [], [element, 0, dot >> ACTOR_BITS], []]
    vv, elements, dots = _parts(packed)
    names = sorted(actor_name(dot & ACTOR_MASK) for dot in vv)
    local = {actor_index(name): position for position, name in enumerate(names)}
    pairs = sorted((local[dot & ACTOR_MASK], dot >> ACTOR_BITS) for dot in vv)
    singles = [
        x for e, d in zip(elements, dots, strict=True) for x in (e, local[d & ACTOR_MASK], d >> ACTOR_BITS)
    ]
    return [names, [x for pair in pairs for x in pair], [], singles, []]


def from_wire(wire: Any) -> bytes | None:
    """The packed set ``ORSet.from_wire(wire)`` gives, when ``wire`` is the canonical form of a small
    set (as ``to_wire`` makes it); None for anything else, valid or not, which ``ORSet.from_wire``
    then reads or rejects. Reading a node's items back at start costs a third of the general path."""
    if type(wire) is not list or len(wire) != 5:
        return None
    names, vv, cloud, singles, multiples = wire
    if cloud != [] or multiples != [] or type(names) is not list or type(vv) is not list:
        return None
    if type(singles) is not list or len(singles) % 3 or len(singles) > 3 * MAX_ELEMENTS:
        return None
    n = len(names)
    if n == 1 and len(singles) == 3 and len(vv) == 2:  # one like by one writer: most items
        return _one_like(names[0], vv, singles)
    if n > MAX_ACTORS or len(vv) != 2 * n or vv[0::2] != list(range(n)):  # every actor once, in order
        return None
    if not all(type(position) is int for position in vv[0::2]):  # not True for 1
        return None
    tops = vv[1::2]
    if not all(type(top) is int and 0 < top <= MAX_COUNTER for top in tops):
        return None
    elements, locals_, counters = singles[0::3], singles[1::3], singles[2::3]
    if not all(type(i) is int and 0 <= i < n for i in locals_):
        return None
    if not all(type(c) is int and 0 < c <= tops[i] for i, c in zip(locals_, counters, strict=True)):
        return None  # a counter out of range, or a dot the context does not cover
    if len(set(zip(locals_, counters, strict=True))) != len(elements):
        return None  # a dot held by two elements
    try:  # the general reading's own checks of the names and the elements
        check_ascending(elements)
        actors = actor_table(names)
    except CodecError:
        return None
    dots = [c << ACTOR_BITS | actors[i] for i, c in zip(locals_, counters, strict=True)]
    context = sorted((top << ACTOR_BITS | a for a, top in zip(actors, tops, strict=True)), key=_actor_of)
    return _build(array("Q", context), array("Q", elements), array("Q", dots))


def _one_like(name: Any, vv: list[Any], singles: list[Any]) -> bytes | None:
    """``from_wire`` of a set of one element under one writer's dot, with nothing in between."""
    position, top = vv
    element, local, counter = singles
    if (
        type(position) is not int
        or position != 0
        or type(local) is not int
        or local != 0
        or type(top) is not int
        or not 0 < top <= MAX_COUNTER
        or type(counter) is not int
        or not 0 < counter <= top
        or type(element) is not int
        or not 0 <= element <= MAX_ELEMENT
        or MAX_ELEMENTS < 1
    ):
        return None
    actor = _writers.get(name) if type(name) is str else None
    if actor is None:
        try:
            (actor,) = actor_table([name])
        except CodecError:
            return None
        if len(_writers) < MAX_WRITERS_CACHED:
            _writers[name] = actor
    return _one(make_dot(actor, top), element, make_dot(actor, counter))


#: Writer names already checked and their actor indexes: a start reads a million one-like sets
#: written by a handful of writers.
_writers: dict[str, int] = {}
MAX_WRITERS_CACHED = 4096


#: A packed set of one element: its one version-vector entry, the element, its dot (as ``array("Q")``
#: lays them out: native order, 8 bytes each).
_ONE = struct.Struct("=QQQ")


def _one(context: int, element: int, dot: int) -> bytes:
    """The packed set of one element under ``dot``, its context the one version-vector entry
    ``context``."""
    return b"\x01" + _ONE.pack(context, element, dot)


def _actor_of(dot: int) -> int:
    return dot & ACTOR_MASK


def _find(packed: bytes, element: int) -> int:
    """The position of ``element`` in ``packed``, or -1."""
    n = packed[0]
    start = 1 + 8 * n
    elements = memoryview(packed)[start : start + 8 * ((len(packed) - start) >> 4)].cast("Q")
    at = bisect_left(elements, element)
    return at if at < len(elements) and elements[at] == element else -1


def _parts(packed: bytes) -> tuple[array[int], array[int], array[int]]:
    """The version vector, the elements and their dots of ``packed``."""
    n = packed[0]
    k = (len(packed) - 1 - 8 * n) >> 4
    ends = (1 + 8 * n, 1 + 8 * (n + k), len(packed))
    vv, elements, dots = array("Q"), array("Q"), array("Q")
    vv.frombytes(packed[1 : ends[0]])
    elements.frombytes(packed[ends[0] : ends[1]])
    dots.frombytes(packed[ends[1] : ends[2]])
    return vv, elements, dots


def _build(vv: array[int], elements: array[int], dots: array[int]) -> bytes:
    return bytes((len(vv),)) + vv.tobytes() + elements.tobytes() + dots.tobytes()
