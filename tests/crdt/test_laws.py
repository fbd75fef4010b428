"""The join is a semilattice join for every type: commutative, associative, idempotent.

Checked on full states and on deltas alike, since gossip joins both into replicas and into batches,
and for ORSets both in the small-set layout and with their elements in the columns.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.crdt.kinds import KINDS, Kind, histories


def joined(*values: Any) -> Any:
    result = values[0].copy()
    for value in values[1:]:
        result.merge(value)
    return result


def three_values(kind: Kind) -> st.SearchStrategy[tuple[Any, Any, Any]]:
    """Three states or deltas drawn from one history, so they share actors and elements."""

    @st.composite
    def draw_three(draw: st.DrawFn) -> tuple[Any, Any, Any]:
        replicas, deltas = draw(histories(kind))
        pool = [*replicas, *deltas]
        return draw(st.sampled_from(pool)), draw(st.sampled_from(pool)), draw(st.sampled_from(pool))

    return draw_three()


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(data=st.data())
def test_merge_is_commutative(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        a, b, _ = data.draw(three_values(kind))
        assert joined(a, b) == joined(b, a)


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(data=st.data())
def test_merge_is_associative(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        a, b, c = data.draw(three_values(kind))
        assert joined(joined(a, b), c) == joined(a, joined(b, c))


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(data=st.data())
def test_merge_is_idempotent(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        a, b, _ = data.draw(three_values(kind))
        assert joined(a, a) == a
        ab = joined(a, b)
        assert joined(ab, b) == ab


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(data=st.data())
def test_merge_leaves_its_argument_untouched(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        a, b, _ = data.draw(three_values(kind))
        before = b.copy()
        joined(a, b)
        assert b == before
