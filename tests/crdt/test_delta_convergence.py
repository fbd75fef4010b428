"""Deltas over a lossy network, then full-state anti-entropy: every replica ends at the full join.

3-5 replicas interleave operations; each delta is dropped, delivered once or several times, to any
subset of peers, in any order. Along the way an ORSet replica's value always equals the reference
OR-set fed the same deliveries (no causal buffering); at the end, full-state anti-entropy makes every
replica equal to the join of all states.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet, decode, encode
from tests.crdt.kinds import KINDS, Kind
from tests.crdt.reference import ReferenceORSet


@st.composite
def lossy_runs(draw: st.DrawFn, kind: Kind) -> tuple[list[Any], list[Any], list[Any]]:
    n = draw(st.integers(3, 5))
    replicas = [kind.new() for _ in range(n)]
    log: dict[str, list[int]] = {}
    models = [kind.new_model(log) for _ in range(n)]
    in_flight: list[tuple[int, Any, Any]] = []  # (destination, delta, model delta)
    for _ in range(draw(st.integers(1, 40))):
        if in_flight and draw(st.booleans()):
            # Deliver any message in flight: reordering; keep it in flight sometimes: duplication.
            k = draw(st.integers(0, len(in_flight) - 1))
            dest, delta, model_delta = in_flight[k] if draw(st.booleans()) else in_flight.pop(k)
            replicas[dest].merge(delta)
            models[dest].merge(model_delta)
            assert replicas[dest].value() == models[dest].value()
            continue
        i = draw(st.integers(0, n - 1))
        delta, model_delta = kind.apply(replicas[i], models[i], f"r{i}", draw(kind.ops))
        if draw(st.booleans()):  # sometimes ship the delta over the wire
            delta = decode(encode(delta))
        for dest in range(n):
            if dest != i and draw(st.integers(0, 9)) >= 3:  # about 30% of sends dropped
                in_flight.append((dest, delta, model_delta))
    return replicas, models, [d for _, d, _ in in_flight]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(data=st.data())
def test_lossy_deltas_then_anti_entropy_converge_to_the_full_join(kind: Kind, data: st.DataObject) -> None:
    with kind.configured():
        converge(kind, data)


def converge(kind: Kind, data: st.DataObject) -> None:
    replicas, models, _ = data.draw(lossy_runs(kind))
    full_join = kind.new()
    for replica in replicas:
        full_join.merge(replica)
    model_join = models[0].copy()
    for model in models[1:]:
        model_join.merge(model)
    assert full_join.value() == model_join.value()

    # Anti-entropy: each replica pulls a full state from its ring neighbour; n rounds reach all.
    n = len(replicas)
    for _ in range(n):
        for i in range(n):
            replicas[i].merge(replicas[(i + 1) % n].copy())
    for replica in replicas:
        assert replica == full_join
        assert replica.value() == full_join.value()


@given(data=st.data())
def test_a_remove_delta_arriving_before_its_add_still_wins_over_it(data: st.DataObject) -> None:
    """The early-delivery case the reference pins down: no buffering, the result is still exact."""
    source, ref = ORSet(), ReferenceORSet()
    element = data.draw(st.integers(0, 2**64 - 1))
    add, ref_add = source.add("a", element), ref.add(element)
    remove, ref_remove = source.remove(element), ref.remove(element)
    sink, ref_sink = ORSet(), ReferenceORSet()
    sink.merge(remove)
    ref_sink.merge(ref_remove)
    sink.merge(add)
    ref_sink.merge(ref_add)
    assert sink.value() == ref_sink.value() == frozenset()
    assert sink == source


def test_concurrent_like_and_unlike_of_one_user_the_like_wins() -> None:
    a, b = ORSet(), ORSet()
    b.merge(a.add("a", 7))
    unlike = b.remove(7)
    relike = a.add("a", 7)
    a.merge(unlike)
    b.merge(relike)
    assert 7 in a and 7 in b and a == b


def test_concurrent_likes_of_one_user_on_two_nodes_count_once() -> None:
    a, b = ORSet(), ORSet()
    da, db = a.add("a", 42), b.add("b", 42)
    a.merge(db)
    b.merge(da)
    assert len(a) == len(b) == 1
    assert a == b
    b.merge(b.remove(42))
    a.merge(b)
    assert len(a) == 0
