"""A full checkpoint's ``liked``: a compact, sorted snapshot that reads like the dict it replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet
from node.checkpoint.checkpointer import LikedAt, _checkpoint, _Pending
from node.checkpoint.records import record_changes
from node.state.item import Item, ItemKey

users = st.sets(st.integers(0, 2**64 - 1), max_size=50)


@given(users, st.integers(0, 2**40))
def test_liked_at_reads_like_dict_fromkeys(likers: set[int], at: int) -> None:
    liked = LikedAt(likers, at)
    expected = dict.fromkeys(likers, at)
    assert dict(liked) == expected and len(liked) == len(expected)
    assert list(liked) == sorted(likers) and list(liked.items()) == sorted(expected.items())
    for user in [*likers, 0, 2**64 - 1, 7]:
        assert (user in liked) == (user in expected)
        assert liked.get(user) == expected.get(user)
    assert -1 not in liked and 2**64 not in liked and "1" not in liked
    assert set(range(10)).difference(liked) == set(range(10)).difference(expected)


def test_a_snapshot_does_not_follow_later_likes() -> None:
    likers = ORSet()
    for user in (3, 1, 2):
        likers.add("n1", user)
    checkpoint = _checkpoint(ItemKey("post", 1).to_bytes(), Item(likers=likers), _Pending([9], True), 5, None)
    likers.add("n1", 4)
    assert isinstance(checkpoint.liked, LikedAt) and list(checkpoint.liked) == [1, 2, 3]
    assert list(checkpoint.unliked) == [9]
    changes = record_changes(checkpoint, active={2, 9, 10})
    assert changes.likes == [(1, 5), (3, 5)] and changes.cancels == [9, 10]
