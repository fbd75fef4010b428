"""``ORSet.merge(other, removed)`` reports exactly the elements the join took out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet
from tests.crdt.kinds import ORSET, histories


@given(histories(ORSET), st.data())
def test_merge_reports_exactly_what_it_removed(
    replicas_and_deltas: tuple[list[ORSet], list[ORSet]], data: st.DataObject
) -> None:
    replicas, deltas = replicas_and_deltas
    for other in [*replicas, *deltas]:
        target = data.draw(st.sampled_from(replicas)).copy()
        before = target.value()
        removed: list[int] = []
        target.merge(other, removed)
        assert sorted(removed) == sorted(before - target.value())
        assert len(removed) == len(set(removed))


@given(
    st.lists(st.integers(0, 400), min_size=100, max_size=300, unique=True),
    st.lists(st.integers(0, 400), max_size=60),
)
def test_a_big_set_reports_the_removals_it_finds_by_index(users: list[int], gone: list[int]) -> None:
    target = ORSet()
    for user in users:
        target.add("a", user)
    peer = target.copy()
    delta = ORSet()
    for user in gone:
        delta.merge(peer.remove(user))
    removed: list[int] = []
    target.merge(delta, removed)
    assert sorted(removed) == sorted(set(gone) & set(users))
