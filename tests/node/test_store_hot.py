"""Hot items: their likers leave the reverse index, and "my likes" and ``likes`` stay exact."""

from __future__ import annotations

import pytest
from hypothesis import given

from crdt import ORSet
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.node.test_store import index_of, operations, play, sync, truth_of

POST = ItemKey("post", 1)
PHOTO = ItemKey("photo", 7)


def test_an_item_that_turns_hot_leaves_the_index_and_comes_back_when_it_cools() -> None:
    store = LikeStore("n1-a.1", hot_item_likes=8)
    store.like(PHOTO, 3)
    for user in range(8):
        store.like(POST, user)
    assert POST.to_bytes() in store.index._hot
    assert store.index._liked_by == {3: PHOTO.to_bytes()}  # user 3 keeps only the cold item
    assert store.liked_items(3, after=None, limit=5)[0] == [PHOTO, POST]
    assert store.liked_items(5, after=None, limit=5)[0] == [POST]
    assert store.liked_items(9, after=None, limit=5)[0] == []
    assert store.likes == 9
    for user in range(4):  # 4 left: still hot (it cools under 4)
        store.unlike(POST, user)
    assert POST.to_bytes() in store.index._hot and store.likes == 5
    store.unlike(POST, 4)
    assert POST.to_bytes() not in store.index._hot
    assert store.liked_items(6, after=None, limit=5)[0] == [POST]
    assert store.liked_items(3, after=None, limit=5)[0] == [PHOTO]
    assert store.likes == 4


def test_a_hot_item_filled_by_peers_and_batches_is_indexed_exactly() -> None:
    a, b = LikeStore("n1-a.1", hot_item_likes=16), LikeStore("n2-b.1", hot_item_likes=16)
    keys, users, liking = [POST.to_bytes()] * 40, list(range(40)), [True] * 40
    a.apply_likes(keys, users, liking)
    sync(a, b)
    assert POST.to_bytes() in a.index._hot and POST.to_bytes() in b.index._hot and not b.index._liked_by
    for user in range(33):
        a.unlike(POST, user)
    sync(a, b)  # one delta removes 33 users: the item cools on the way, mid-merge
    for store in (a, b):
        assert POST.to_bytes() not in store.index._hot
        assert index_of(store, range(41)) == truth_of(store, [POST], range(41))
        assert store.likes == 7


def test_a_full_state_that_removes_users_of_a_hot_item_is_indexed_without_a_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = LikeStore("n1-a.1", hot_item_likes=16), LikeStore("n2-b.1", hot_item_likes=16)
    for user in range(100):
        a.like(POST, user)
    sync(a, b)
    for user in range(10):
        a.unlike(POST, user)
    a.drain_deltas()  # lost: only anti-entropy's full state repairs b

    def no_snapshots(self: ORSet) -> frozenset[int]:
        raise AssertionError("the merge copied the liker set")

    monkeypatch.setattr(ORSet, "value", no_snapshots)
    state = a.state(POST.to_bytes())
    assert state is not None
    b.merge(POST.to_bytes(), state)
    assert b.count(POST) == 90 and b.likes == 90
    assert set(b.drain_dirty()[POST.to_bytes()]) >= set(range(10))
    assert index_of(b, range(101)) == truth_of(b, [POST], range(101))


@given(operations)
def test_the_reverse_index_agrees_with_the_liker_sets_across_hot_and_cold(
    ops: list[tuple[str, str, int, int, str]],
) -> None:
    stores = {name: LikeStore(f"{name}-0000000000000000.1", hot_item_likes=4) for name in "abc"}
    keys = [ItemKey("post", i) for i in range(4)]
    outbox: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in stores}
    for step in ops:
        play(stores, keys, outbox, step)
        for checked in stores.values():
            assert index_of(checked, range(5)) == truth_of(checked, keys, range(5))
            assert checked.likes == sum(checked.count(key) for key in keys)
            for raw in checked.index._hot:  # a hot item's likers are never in the index
                assert not any(
                    raw == v or (isinstance(v, set) and raw in v) for v in checked.index._liked_by.values()
                )


def test_hot_item_likes_below_two_is_refused() -> None:
    with pytest.raises(ValueError):
        LikeStore("n1-a.1", hot_item_likes=1)
