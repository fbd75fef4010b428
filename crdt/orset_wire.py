"""The OR-set's wire form: deterministic, flat, checked on the way in; framed by ``crdt.codec``.

``[actors, vv, cloud, singles, multiples]``, five lists of plain values: ``actors`` the actor names,
ascending, and every other list flat ints naming actors by their position there (a name is written
once, not once a dot): ``vv`` and ``cloud`` are ``actor, counter`` pairs, ``singles`` are ``element,
actor, counter`` triples and ``multiples`` are ``element, n, (actor, counter) * n`` runs, each in
element order. Flat lists of small ints are what msgpack packs tightest, and sorting everything
makes equal states encode to equal bytes.

The functions take the set as their first argument and are ``ORSet``'s methods of the same names.
``from_wire`` is a trust boundary: whatever the list, it returns a valid set or raises ``CodecError``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any

import msgpack

from crdt import columns as storage
from crdt.columns import MAX_ELEMENT, Columns
from crdt.dots import (
    ACTOR_BITS,
    ACTOR_MASK,
    MAX_ACTOR_NAME,
    MAX_COUNTER,
    actor_index,
    actor_name,
    make_dot,
    valid_actor_name,
)
from crdt.errors import CodecError

if TYPE_CHECKING:
    from crdt.orset import ORSet

#: Elements packed per chunk by ``packed_wire``: its transient objects are one chunk's, not the set's.
PACK_CHUNK = 4096


def to_wire(s: ORSet) -> list[Any]:
    """A deterministic msgpack-ready form: names sorted, dots and elements in order."""
    cc = s._cc
    if len(s._entries) == 1 and len(cc.cloud) == 1 and not cc.vv and s._columns is None:
        # The delta of one like: the general path gives exactly this, six sorts later.
        ((element, dots),) = s._entries.items()
        (dot,) = cc.cloud
        if dots == dot:
            counter = dot >> ACTOR_BITS
            return [[actor_name(dot & ACTOR_MASK)], [], [0, counter], [element, 0, counter], []]
    return to_wire_general(s)


def to_wire_general(s: ORSet) -> list[Any]:
    """``to_wire`` of any set, with no shortcut."""
    names, local, vv, cloud = _actors(s)
    singles = [x for e, d in _singles(s) for x in (e, local[d & ACTOR_MASK], d >> ACTOR_BITS)]
    return [names, vv, cloud, singles, _multiples(s, local)]


def packed_wire(s: ORSet) -> bytes:
    """``msgpack.packb(to_wire(s))``, the same bytes, packed ``PACK_CHUNK`` elements at a time.

    ``to_wire`` of a million-liker set builds a flat list of three million ints, a million of them
    new (the counters): about 60 MB at once, which a node's RSS keeps once the freed ints are
    scattered among live ones. Here only one chunk's ints exist at a time.
    """
    names, local, vv, cloud = _actors(s)
    packer = msgpack.Packer(use_bin_type=True)
    pieces = [packer.pack_array_header(5), packer.pack(names), packer.pack(vv), packer.pack(cloud)]
    pieces.append(b"")  # the singles header, once their number is known
    header_at, count = len(pieces) - 1, 0
    singles = _singles(s)
    while chunk := list(islice(singles, PACK_CHUNK)):
        flat = [x for e, d in chunk for x in (e, local[d & ACTOR_MASK], d >> ACTOR_BITS)]
        packed = packer.pack(flat)
        pieces.append(packed[len(packer.pack_array_header(len(flat))) :])
        count += len(flat)
    pieces[header_at] = packer.pack_array_header(count)
    pieces.append(packer.pack(_multiples(s, local)))
    return b"".join(pieces)


def _actors(s: ORSet) -> tuple[list[str], dict[int, int], list[int], list[int]]:
    """The wire's actor names, each actor's position among them, and the flat vv and cloud."""
    cc = s._cc
    used = set(cc.vv) | {d & ACTOR_MASK for d in cc.cloud}
    names = sorted(actor_name(a) for a in used)
    local = {actor_index(name): position for position, name in enumerate(names)}
    vv = [x for a, c in sorted((local[a], c) for a, c in cc.vv.items()) for x in (a, c)]
    cloud = sorted((local[d & ACTOR_MASK], d >> ACTOR_BITS) for d in cc.cloud)
    return names, local, vv, [x for pair in cloud for x in pair]


def _multiples(s: ORSet, local: dict[int, int]) -> list[int]:
    """The wire's ``multiples``: only the dict holds elements of several dots."""
    multiples: list[int] = []
    for element, dots in sorted((e, d) for e, d in s._entries.items() if type(d) is not int):
        multiples.extend((element, len(dots)))  # type: ignore[arg-type]
        for a, c in sorted((local[d & ACTOR_MASK], d >> ACTOR_BITS) for d in dots):  # type: ignore[union-attr]
            multiples.extend((a, c))
    return multiples


def _singles(s: ORSet) -> Iterator[tuple[int, int]]:
    """The single-dot ``(element, dot)`` pairs, ascending, from both parts."""
    recent = sorted((e, d) for e, d in s._entries.items() if type(d) is int)
    return s._in_order(recent)  # type: ignore[arg-type, return-value]


def from_wire(cls: type[ORSet], wire: Any) -> ORSet:
    """Rebuild a ``cls`` from ``to_wire`` form, checking every invariant; raise CodecError if broken.

    Singles as many as ``COMPACT_MIN`` go straight into the columns: they arrive sorted.
    """
    if type(wire) is not list or len(wire) != 5 or not all(type(part) is list for part in wire):
        raise CodecError("ORSet: expected five lists")
    names, vv, cloud, singles, multiples = wire
    actors = actor_table(names)
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
    check_ascending(singles[0::3])
    columnar = len(singles) // 3 >= storage.COMPACT_MIN
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
    columns = state._columns = Columns(array("Q", singles[0::3]), single_dots) if columnar else None

    elements: list[Any] = []
    i = 0
    while i < len(multiples):
        count = multiples[i + 1] if i + 1 < len(multiples) else None
        if type(count) is not int or count < 2 or i + 2 + 2 * count > len(multiples):
            raise CodecError("ORSet: bad dot count in multiples")
        element = multiples[i]
        elements.append(element)
        check_ascending(elements[-2:])
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


def check_ascending(elements: list[Any]) -> None:
    """Raise CodecError unless ``elements`` are unsigned 64-bit ints in strictly ascending order."""
    if not all(type(e) is int and 0 <= e <= MAX_ELEMENT for e in elements):
        raise CodecError("ORSet: elements must be unsigned 64-bit ints")
    if any(a >= b for a, b in pairwise(elements)):
        raise CodecError("ORSet: elements must be strictly ascending")


def actor_table(names: list[Any]) -> list[int]:
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
