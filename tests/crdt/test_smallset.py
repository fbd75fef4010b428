"""``crdt.smallset``: a packed small set is the ``ORSet`` it packs, answers as it does, takes a like as
``ORSet.insert`` does, and joins (through ``unpack``) as it does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import CodecError, ORSet, encode, smallset
from crdt.codec import encode_small
from crdt.dots import actor_index, make_dot
from tests.crdt.kinds import ORSET, histories

UNIVERSE = [*range(12), 2**40 + 7, 2**64 - 1]
ACTORS = [f"r{i}" for i in range(5)]


def small(s: ORSet) -> bool:
    """Whether ``s`` is small in the module's sense: what ``pack`` must accept, and all it may."""
    entries = s._entries
    return (
        s._columns is None
        and not s._cc.cloud
        and len(entries) <= smallset.MAX_ELEMENTS
        and all(type(dots) is int for dots in entries.values())
    )


def sets(draw: st.DrawFn) -> list[ORSet]:
    replicas, deltas = draw(histories(ORSET))
    return [*replicas, *deltas]


@given(st.data())
def test_pack_is_exact_and_answers_as_the_set(data: st.DataObject) -> None:
    for s in sets(data.draw):
        packed = smallset.pack(s)
        assert (packed is not None) == small(s)
        if packed is None:
            assert smallset.from_wire(s.to_wire()) is None
            continue
        assert smallset.unpack(packed) == s
        assert encode_small(packed) == encode(s)
        assert smallset.from_wire(s.to_wire()) == packed
        assert smallset.size(packed) == len(s)
        assert smallset.elements(packed) == sorted(s)
        for element in UNIVERSE:
            assert smallset.contains(packed, element) == (element in s)
            assert (smallset.dot_of(packed, element),) == (s.held_dots(element) or (None,))
        for actor in ACTORS:
            assert smallset.next_dot(packed, actor_index(actor)) == s.next_dot(actor)


@given(st.data(), st.sampled_from(UNIVERSE), st.sampled_from(ACTORS), st.integers(0, 3))
def test_insert_is_orset_insert(data: st.DataObject, element: int, actor: str, skip: int) -> None:
    """Whatever the dot (the next one, one already seen, one past a gap), the packed insert gives the
    set ``ORSet.insert`` gives, or declines exactly when that set is not small."""
    for s in sets(data.draw):
        packed = smallset.pack(s)
        if packed is None:
            continue
        dot = s.next_dot(actor) + make_dot(0, skip) if skip < 3 else make_dot(actor_index(actor), 1)
        inserted = smallset.insert(packed, element, dot)
        s.insert(element, dot)
        assert (inserted is not None) == small(s)
        if inserted is not None:
            assert smallset.unpack(inserted) == s


@given(st.data())
def test_joins_through_the_packed_form_are_the_joins(data: st.DataObject) -> None:
    """A replica packed and unpacked before each join ends where one never packed does."""
    replicas, deltas = data.draw(histories(ORSET))
    plain, through = ORSet(), ORSet()
    for incoming in [*deltas, *replicas]:
        plain.merge(incoming.copy())
        packed = smallset.pack(through)
        if packed is not None:
            through = smallset.unpack(packed)
        through.merge(incoming.copy())
    assert through == plain
    assert smallset.pack(ORSet()) == smallset.EMPTY
    assert smallset.unpack(smallset.EMPTY) == ORSet()


def test_one_like_costs_one_small_value() -> None:
    s = ORSet()
    s.add("n1", 10**12)
    packed = smallset.pack(s)
    assert packed is not None and len(packed) == 25
    assert smallset.insert(smallset.EMPTY, 10**12, s.held_dots(10**12)[0]) == packed


#: What a part of a wire form may be replaced by: near misses of every check.
wire_values = st.one_of(
    st.integers(-1, 4),
    st.integers(-2, 2**64 + 1),
    st.sampled_from(["", "r0", "r1", "a" * 65, None, 1.5, b"x", True, False]),
    st.lists(st.integers(-1, 3), max_size=7),
)


@given(st.data(), st.integers(0, 4), st.integers(0, 8), wire_values)
def test_a_wire_form_read_packed_is_one_the_general_path_reads_alike(
    data: st.DataObject, part: int, at: int, value: object
) -> None:
    """Whatever one value of a wire form is replaced by, the packed reading either declines or gives
    exactly the packed set the general reading gives: it never accepts what ``ORSet.from_wire``
    rejects, never reads it otherwise."""
    for s in sets(data.draw):
        wire = s.to_wire()
        target = wire[part]
        if target and data.draw(st.booleans()):
            target[at % len(target)] = value
        else:
            wire[part] = value
        packed = smallset.from_wire(wire)
        if packed is None:
            continue
        assert smallset.pack(ORSet.from_wire(wire)) == packed


def test_a_wire_form_the_general_path_rejects_is_never_read_packed() -> None:
    s = ORSet()
    s.add("r0", 5)
    s.add("r0", 9)
    names, vv, cloud, singles, multiples = s.to_wire()
    assert smallset.from_wire([names, vv, cloud, singles, multiples]) == smallset.pack(s)
    for bad in (
        [5, 0, 1, 9, 0, 1],  # one dot held by two elements
        [5, 0, 1, 9, 0, 3],  # a dot the context has not seen
        [9, 0, 1, 5, 0, 2],  # elements out of order
        [5, 1, 1, 9, 0, 2],  # an actor the names do not list
    ):
        with pytest.raises(CodecError):
            ORSet.from_wire([names, vv, cloud, bad, multiples])
        assert smallset.from_wire([names, vv, cloud, bad, multiples]) is None
    assert smallset.from_wire([["r1", "r0"], [0, 1, 1, 1], [], [], []]) is None  # names out of order


def test_a_bool_is_not_an_int_on_the_wire() -> None:
    """msgpack has booleans, and ``False == 0``: the packed reading must reject them as the general
    one does, in the one-like form too."""
    one = ORSet()
    one.add("r0", 5)
    names, vv, cloud, singles, multiples = one.to_wire()
    two = ORSet()
    two.add("r0", 5)
    two.add("r1", 6)
    for wire in (
        [names, [False, vv[1]], cloud, singles, multiples],
        [names, vv, cloud, [singles[0], False, singles[2]], multiples],
        [names, vv, cloud, [singles[0], singles[1], True], multiples],
        [two.to_wire()[0], [False, 1, True, 1], [], two.to_wire()[3], []],
    ):
        with pytest.raises(CodecError):
            ORSet.from_wire(wire)
        assert smallset.from_wire(wire) is None
