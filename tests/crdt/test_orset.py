"""ORSet behaviour the laws do not pin down: the public API, bad input, and the removal index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import crdt.columns
import crdt.orset
from crdt import ORSet
from crdt.orset_wire import to_wire_general
from tests.crdt.kinds import columns_from


def test_api_in_one_breath() -> None:
    s = ORSet()
    d = s.add("n1", 42)
    assert isinstance(d, ORSet) and d is not s and d.value() == {42}
    assert 42 in s and len(s) == 1 and s.value() == frozenset({42}) and list(s) == [42]
    assert s.remove(42).value() == frozenset() and 42 not in s
    assert s.remove(42) == ORSet()  # removing an absent element: an empty delta
    t = s.copy()
    t.add("n1", 1)
    assert 1 not in s


@pytest.mark.parametrize("bad", [-1, 2**64, 1.0, "1", True, None])
def test_elements_must_be_unsigned_64_bit_ints(bad: object) -> None:
    s = ORSet()
    with pytest.raises((TypeError, ValueError)):
        s.add("n1", bad)  # type: ignore[arg-type]
    assert s == ORSet()


@pytest.mark.parametrize("bad", ["", "x" * 65, 3])
def test_actor_names_are_checked(bad: object) -> None:
    with pytest.raises(ValueError):
        ORSet().add(bad, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("compact_min", [crdt.columns.COMPACT_MIN, 32])
@given(
    st.lists(st.integers(0, 400), min_size=100, max_size=300, unique=True),
    st.lists(st.tuples(st.sampled_from(["remove", "add"]), st.integers(0, 400)), max_size=60),
)
def test_removals_found_by_index_equal_removals_found_by_scan(
    compact_min: int, users: list[int], ops: list[tuple[str, int]]
) -> None:
    """Big sets find a peer's removals through the dot index; small sets scan. Same answer, with the
    set in a dict or (``compact_min`` 32) mostly in columns."""
    with columns_from(compact_min):
        removals_by_index_and_by_scan(users, ops)


def removals_by_index_and_by_scan(users: list[int], ops: list[tuple[str, int]]) -> None:
    source = ORSet()
    for user in users:
        source.add("a", user)
    indexed, scanned = source.copy(), source.copy()
    deltas = []
    peer = source.copy()
    for verb, user in ops:
        deltas.append(peer.remove(user) if verb == "remove" else peer.add("b", user))
    for delta in deltas:
        indexed.merge(delta)
    original = crdt.orset._SCAN_BELOW
    crdt.orset._SCAN_BELOW = 10**9
    try:
        for delta in deltas:
            scanned.merge(delta)
    finally:
        crdt.orset._SCAN_BELOW = original
    assert indexed == scanned == peer
    # Local adds after the index exists keep it right.
    indexed.add("a", 10**6)
    last = peer.remove(users[0])
    indexed.merge(last)
    assert users[0] not in indexed and 10**6 in indexed


def test_a_late_delta_from_a_far_counter_is_indexed_sparsely() -> None:
    a = ORSet()
    for user in range(200):
        a.add("a", user)
    far = ORSet()
    for _ in range(5000):
        far.add("z", 999)
        far.remove(999)
    far_add = far.add("z", 12345)  # counter 5001 of actor z
    a.merge(far_add)
    a.merge(a.remove(0))  # builds the index
    a.merge(far.remove(12345))
    assert 12345 not in a and len(a) == 199


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20), st.sampled_from(["n1", "n2-0123abcd.7"]))
def test_the_one_like_fast_path_encodes_exactly_as_the_general_path(users: list[int], actor: str) -> None:
    s = ORSet()
    deltas = [s.add(actor, user) for user in users]
    for delta in deltas:
        assert delta.to_wire() == to_wire_general(delta)
    assert s.to_wire() == to_wire_general(s)
