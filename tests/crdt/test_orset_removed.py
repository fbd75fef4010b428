"""``ORSet.merge(other, removed, added)`` reports exactly the elements the join took out and brought in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet
from tests.crdt.kinds import ORSET, ORSET_COLUMNS, Kind, columns_from, histories


@pytest.mark.parametrize("kind", [ORSET, ORSET_COLUMNS], ids=repr)
@given(data=st.data())
def test_merge_reports_exactly_what_it_removed_and_added(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        replicas, deltas = data.draw(histories(kind))
        for other in [*replicas, *deltas]:
            target = data.draw(st.sampled_from(replicas)).copy()
            before = target.value()
            removed: list[int] = []
            added: list[int] = []
            target.merge(other, removed, added)
            assert sorted(removed) == sorted(before - target.value())
            assert sorted(added) == sorted(target.value() - before)
            assert len(removed) == len(set(removed)) and len(added) == len(set(added))


@given(
    st.lists(st.integers(0, 400), min_size=100, max_size=300, unique=True),
    st.lists(st.integers(0, 400), max_size=60),
)
def test_a_big_set_reports_the_removals_it_finds_by_index(users: list[int], gone: list[int]) -> None:
    with columns_from(32):  # most of the set in columns: the index lists their elements too
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
