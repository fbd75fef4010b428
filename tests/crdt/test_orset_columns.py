"""ORSet columns: a set whose elements moved into the compact columns behaves as one kept in a dict.

Every replica has two twins fed the same operations and deliveries: one with the compaction threshold
lowered to a few elements (its elements move into the columns, die there, come back and move out
again), one that never compacts. After every step the twins are equal both ways, answer every query
alike, encode to the same bytes, report the same joins, and agree with the reference OR-set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager
from itertools import pairwise

import msgpack
import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import crdt.orset_wire
from crdt import CodecError, ORSet, decode, encode
from tests.crdt.kinds import columns_from
from tests.crdt.reference import ReferenceORSet

REPLICAS = 3
#: Each replica writes as two actors, so sets hold dots of several actors per replica.
WRITERS = ["", "-b"]
#: Enough elements for several column slots; 0 is the dot index's gap value, 2**64 - 1 the largest.
UNIVERSE = [*range(12), 2**40 + 7, 2**64 - 1]
elements = st.sampled_from(UNIVERSE)
#: So large the plain twin never compacts.
NEVER = 10**9

#: (columnar twin, plain twin, reference) of one replica, a delta or a snapshot.
Triple = tuple[ORSet, ORSet, ReferenceORSet]


def check_layout(s: ORSet) -> None:
    """The columns' own invariants: ascending, dead slots counted, no element live in both parts."""
    columns = s._columns
    if columns is None:
        return
    slots, dots = list(columns.elements), list(columns.dots)
    assert len(slots) == len(dots)
    assert all(a < b for a, b in pairwise(slots))
    assert columns.dead == dots.count(0)
    live = {element for element, dot in zip(slots, dots, strict=True) if dot}
    assert not live & set(s._entries)
    assert all(type(dots) is not int for dots in s._entries.values()) or len(s._entries) < columns.limit


class ColumnsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas: list[Triple] = [(ORSet(), ORSet(), ReferenceORSet()) for _ in range(REPLICAS)]
        self.deltas: list[Triple] = []
        self.snapshots: list[Triple] = []
        self.added: set[tuple[int, str, int]] = set()  # (element, actor, counter) of every add
        self.small = (1, 0, 1)

    @initialize(
        compact_min=st.integers(1, 4),
        scan_below=st.sampled_from([0, 3, 64]),
        block=st.sampled_from([1, 2, 4096]),
    )
    def configure(self, compact_min: int, scan_below: int, block: int) -> None:
        self.small = (compact_min, scan_below, block)

    def columnar(self) -> AbstractContextManager[None]:
        compact_min, scan_below, block = self.small
        return columns_from(compact_min, scan_below=scan_below, block=block)

    def plain(self) -> AbstractContextManager[None]:
        return columns_from(NEVER)

    @rule(i=st.integers(0, REPLICAS - 1), writer=st.sampled_from(WRITERS), element=elements)
    def add(self, i: int, writer: str, element: int) -> None:
        columnar, plain, model = self.replicas[i]
        actor = f"r{i}{writer}"  # an actor's dots come from one replica only
        with self.columnar():
            delta = columnar.add(actor, element)
        with self.plain():
            plain_delta = plain.add(actor, element)
        assert delta == plain_delta
        self.added.update((element, name, c) for name, c in plain.dots_of(element))
        self.deltas.append((delta, plain_delta, model.add(element)))

    @rule(i=st.integers(0, REPLICAS - 1), element=elements)
    def remove(self, i: int, element: int) -> None:
        columnar, plain, model = self.replicas[i]
        with self.columnar():
            delta = columnar.remove(element)
        with self.plain():
            plain_delta = plain.remove(element)
        assert delta == plain_delta
        self.deltas.append((delta, plain_delta, model.remove(element)))

    def join(self, i: int, incoming: Triple, *, cross: bool = False) -> None:
        """Join into replica ``i``; ``cross``: the columnar twin joins the plain one's counterpart."""
        columnar, plain, model = self.replicas[i]
        theirs, plain_theirs, model_theirs = incoming
        before = plain.value()
        removed: list[int] = []
        added: list[int] = []
        plain_removed: list[int] = []
        with self.columnar():
            columnar.merge(plain_theirs if cross else theirs, removed, added)
        with self.plain():
            plain.merge(plain_theirs, plain_removed)
        model.merge(model_theirs)
        after = plain.value()
        assert sorted(removed) == sorted(plain_removed) == sorted(before - after)
        assert sorted(added) == sorted(after - before)

    @precondition(lambda self: self.deltas)
    @rule(i=st.integers(0, REPLICAS - 1), data=st.data(), cross=st.booleans())
    def deliver_delta(self, i: int, data: st.DataObject, cross: bool) -> None:
        """Any delta, in any order, any number of times."""
        self.join(i, data.draw(st.sampled_from(self.deltas)), cross=cross)

    @rule(i=st.integers(0, REPLICAS - 1))
    def snapshot(self, i: int) -> None:
        columnar, plain, model = self.replicas[i]
        with self.columnar():
            self.snapshots.append((columnar.copy(), plain.copy(), model.copy()))

    @precondition(lambda self: self.snapshots)
    @rule(i=st.integers(0, REPLICAS - 1), data=st.data(), cross=st.booleans())
    def merge_stale_state(self, i: int, data: st.DataObject, cross: bool) -> None:
        self.join(i, data.draw(st.sampled_from(self.snapshots)), cross=cross)

    @rule(i=st.integers(0, REPLICAS - 1), j=st.integers(0, REPLICAS - 1), cross=st.booleans())
    def merge_current_state(self, i: int, j: int, cross: bool) -> None:
        columnar, plain, model = self.replicas[j]
        self.join(i, (columnar.copy(), plain.copy(), model.copy()), cross=cross)

    @rule(i=st.integers(0, REPLICAS - 1), chunk=st.sampled_from([1, 2, 5]))
    def codec_round_trip(self, i: int, chunk: int) -> None:
        """Same bytes from both twins, chunked or not; the decoded columnar twin carries on."""
        columnar, plain, model = self.replicas[i]
        data = encode(plain)
        assert encode(columnar) == data
        saved = crdt.orset_wire.PACK_CHUNK
        crdt.orset_wire.PACK_CHUNK = chunk
        try:
            assert columnar.packed_wire() == plain.packed_wire() == data[2:]
        finally:
            crdt.orset_wire.PACK_CHUNK = saved
        assert columnar.to_wire() == plain.to_wire()
        with self.columnar():
            decoded = decode(data)
        assert decoded == columnar and encode(decoded) == data
        self.replicas[i] = (decoded, plain, model)  # type: ignore[assignment]

    @rule(i=st.integers(0, REPLICAS - 1), gone=elements, new=elements)
    def copies_are_independent(self, i: int, gone: int, new: int) -> None:
        columnar, plain, _ = self.replicas[i]
        with self.columnar():
            clone = columnar.copy()
            assert clone == columnar
            clone.remove(gone)
            clone.add("z", new)
        assert columnar == plain

    @invariant()
    def twins_agree(self) -> None:
        for columnar, plain, model in self.replicas:
            check_layout(columnar)
            assert plain._columns is None
            if columnar._columns is not None and columnar._columns.live():
                event("columns hold elements")
            assert columnar == plain and plain == columnar
            assert columnar.value() == plain.value() == model.value()
            assert len(columnar) == len(plain)
            assert sorted(columnar) == sorted(plain)
            assert repr(columnar) == repr(plain)
            for element in UNIVERSE:
                assert (element in columnar) == (element in plain)
                assert columnar.dots_of(element) == plain.dots_of(element)
            for element, actor, counter in self.added:
                assert columnar.has_seen(actor, counter) == plain.has_seen(actor, counter)
                removal = (element, actor, counter)
                assert columnar.has_removed(*removal) == plain.has_removed(*removal)

    def teardown(self) -> None:
        """Full-state anti-entropy at the end: every twin ends at the join of all."""
        if not hasattr(self, "replicas"):
            return
        with self.columnar():
            everything = ORSet()
            for columnar, _, _ in self.replicas:
                everything.merge(columnar)
            for columnar, _, _ in self.replicas:
                columnar.merge(everything)
                assert columnar == everything
        with self.plain():
            for _, plain, _ in self.replicas:
                plain.merge(everything)
                assert plain == everything and encode(plain) == encode(everything)


TestColumnsMachine = ColumnsMachine.TestCase


def big_twins(seed: int) -> Iterator[tuple[ORSet, ORSet]]:
    """A few thousand likes by random 40-bit ids, unlikes and re-likes, under the real thresholds
    lowered tenfold, yielded after each round of changes: the columns with dead and revived slots."""
    rng = random.Random(seed)
    columnar, plain = ORSet(), ORSet()
    users = [rng.getrandbits(40) for _ in range(3000)]
    for start in range(0, len(users), 500):
        for user in users[start : start + 500]:
            with columns_from(400):
                columnar.add("n1", user)
            with columns_from(NEVER):
                plain.add("n1", user)
        for user in rng.sample(users[: start + 500], 150):
            with columns_from(400):
                delta = columnar.remove(user)
            with columns_from(NEVER):
                assert plain.remove(user) == delta
        yield columnar, plain


def test_a_big_set_in_columns_is_the_set_in_a_dict() -> None:
    for columnar, plain in big_twins(5):
        check_layout(columnar)
        assert columnar._columns is not None and columnar._columns.live() > len(columnar) // 2
        assert columnar == plain and encode(columnar) == encode(plain)
        assert msgpack.packb(columnar.to_wire(), use_bin_type=True) == columnar.packed_wire()
        assert decode(encode(plain)) == columnar


def test_a_peers_deltas_join_a_big_set_as_they_join_a_dict() -> None:
    """Removals found by the dot index (the columns' elements included), concurrent re-adds moving
    elements out of the columns, and each delta's report of what it took out."""
    *_, (columnar, plain) = big_twins(9)
    peer = plain.copy()
    rng = random.Random(3)
    held = sorted(plain)
    deltas = []
    for user in rng.sample(held, 300):
        deltas.append(peer.remove(user) if rng.random() < 0.7 else peer.add("n2", user))
    deltas.append(peer.add("n2", 0))
    deltas.append(peer.remove(0))
    for delta in deltas:
        removed: list[int] = []
        plain_removed: list[int] = []
        with columns_from(400):
            columnar.merge(delta, removed)
        with columns_from(NEVER):
            plain.merge(delta, plain_removed)
        assert removed == plain_removed
    check_layout(columnar)
    assert columnar == plain == peer


def test_moves_into_the_columns_cost_o1_amortised() -> None:
    """The dict grows by a sixteenth of the columns between moves: few moves for many adds."""
    s = ORSet()
    moves = 0
    compact = ORSet._compact

    def counted(self: ORSet) -> None:
        nonlocal moves
        moves += 1
        compact(self)

    ORSet._compact = counted  # type: ignore[method-assign]
    try:
        for user in range(200_000):
            s.add("n1", user)
    finally:
        ORSet._compact = compact  # type: ignore[method-assign]
    assert s._columns is not None and len(s._entries) < 200_000 // 8
    assert moves <= 50


def test_a_wire_decoded_into_columns_still_refuses_an_element_listed_twice() -> None:
    wire = [["a"], [0, 3], [], [5, 0, 1], [5, 2, 0, 2, 0, 3]]  # 5: a single and a multiple
    with columns_from(1), pytest.raises(CodecError, match="twice"):
        ORSet.from_wire(wire)
    with columns_from(1):
        decoded = ORSet.from_wire([["a"], [0, 3], [], [5, 0, 1], [6, 2, 0, 2, 0, 3]])
    assert decoded._columns is not None and decoded.value() == {5, 6}
