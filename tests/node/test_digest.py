"""Item digests (``node.digest``): kept as likers change, always equal to a digest from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.digest import digest_of, liker_sum
from node.item import ItemKey
from node.store import LikeStore

ITEMS = [ItemKey("post", 1), ItemKey("post", 2)]
USERS = st.integers(min_value=0, max_value=6)

#: (kind, store, item, user or other store): like, unlike, deliver deltas, ship a full state.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("like"), st.integers(0, 2), st.integers(0, 1), USERS),
        st.tuples(st.just("unlike"), st.integers(0, 2), st.integers(0, 1), USERS),
        st.tuples(st.just("deltas"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 2)),
        st.tuples(st.just("state"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 2)),
        st.tuples(st.just("digest"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 2)),
    ),
    max_size=60,
)


def from_scratch(store: LikeStore, key: ItemKey) -> bytes:
    item = store.item(key.to_bytes())
    return digest_of(item, liker_sum(item.likers))


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_kept_digests_equal_digests_from_scratch(ops: list[tuple[str, int, int, int]]) -> None:
    stores = [LikeStore(f"n{i}-0123456789abcdef.1") for i in range(3)]
    for kind, i, item, arg in ops:
        store, key = stores[i], ITEMS[item]
        if kind == "like":
            store.like(key, arg)
        elif kind == "unlike":
            store.unlike(key, arg)
        elif kind == "deltas":
            for raw, payload in store.drain_deltas():
                stores[arg].merge(raw, payload)
        elif kind == "state":
            state = store.state(key.to_bytes())
            if state is not None:
                stores[arg].merge(key.to_bytes(), state)
        else:
            store.digest(key.to_bytes())  # a cached digest must be dropped by any later change
        for other in stores:
            for k in ITEMS:
                if other.digest(k.to_bytes()):
                    assert other.digest(k.to_bytes()) == from_scratch(other, k)
    for store in stores:  # full exchange: every store ends equal, and so do the digests
        for other in stores:
            for key in ITEMS:
                state = other.state(key.to_bytes())
                if state is not None:
                    store.merge(key.to_bytes(), state)
    for key in ITEMS:
        digests = {store.digest(key.to_bytes()) for store in stores}
        encodings = {store.state(key.to_bytes()) for store in stores}
        assert len(encodings) == 1 and len(digests) == 1


def test_a_digest_tells_likers_and_their_dots_apart() -> None:
    a, b = LikeStore("a-0123456789abcdef.1"), LikeStore("b-0123456789abcdef.1")
    key = ITEMS[0]
    a.like(key, 1)
    b.like(key, 1)  # the same user, liked under another writer's dot
    assert a.digest(key.to_bytes()) != b.digest(key.to_bytes())
    before = a.digest(key.to_bytes())
    a.like(key, 2)
    assert a.digest(key.to_bytes()) != before
    a.unlike(key, 2)
    assert a.digest(key.to_bytes()) != before  # the context remembers the removed like's dot


def test_a_full_state_that_removes_a_liker_keeps_the_digest_exact() -> None:
    a, b = LikeStore("a-0123456789abcdef.1"), LikeStore("b-0123456789abcdef.1")
    key, raw = ITEMS[0], ITEMS[0].to_bytes()
    a.like(key, 1)
    a.like(key, 2)
    for delta_key, payload in a.drain_deltas():
        b.merge(delta_key, payload)
    assert b.digest(raw) == from_scratch(b, key)
    a.unlike(key, 1)
    a.drain_deltas()  # the unlike's delta is lost: only anti-entropy's full state carries it
    b.merge(raw, a.state(raw) or b"")
    assert b.count(key) == 1 and b.digest(raw) == from_scratch(b, key) == a.digest(raw)
