"""``ORSet.digest``: equal states give equal digests whatever the history, different states differ,
and the element sum a tracked set keeps through every change equals the one computed from scratch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet, decode, encode

ACTORS = ("a", "b", "c")
#: (replica, op, element): op 0 adds, 1 removes, 2 merges the delta of the last op into the next
#: replica, 3 merges this replica's whole state into the next one.
OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 12)), max_size=60)


def _run(ops: list[tuple[int, int, int]], tracked_from: int) -> list[ORSet]:
    replicas = [ORSet() for _ in ACTORS]
    replicas[0].track_digest()
    delta = ORSet()
    for step, (who, op, element) in enumerate(ops):
        if step == tracked_from:
            for replica in replicas:
                replica.track_digest()
        replica, other = replicas[who], replicas[(who + 1) % len(replicas)]
        if op == 0:
            delta = replica.add(ACTORS[who], element)
        elif op == 1:
            delta = replica.remove(element)
        elif op == 2:
            other.merge(delta)
        else:
            other.merge(replica)
    return replicas


@given(OPS, st.integers(0, 60))
def test_the_kept_sum_is_the_sum_from_scratch(ops: list[tuple[int, int, int]], tracked_from: int) -> None:
    for replica in _run(ops, tracked_from):
        if replica._khash is not None:
            assert replica._khash == replica._element_sum()
        # A decoded copy (never tracked) computes the same digest from scratch.
        copy = decode(encode(replica))
        assert isinstance(copy, ORSet)
        assert copy.digest() == replica.digest()


@given(OPS, st.integers(0, 60))
def test_replicas_agree_on_the_digest_exactly_when_they_agree_on_the_state(
    ops: list[tuple[int, int, int]], tracked_from: int
) -> None:
    replicas = _run(ops, tracked_from)
    for replica in replicas:
        for other in replicas:
            assert (replica.digest() == other.digest()) == (replica == other)
    for replica in replicas[1:]:
        replicas[0].merge(replica)
    for replica in replicas[1:]:
        replica.merge(replicas[0])
        assert replica.digest() == replicas[0].digest()
