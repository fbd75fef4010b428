"""The store: likes, unlikes, counters, the "my likes" index, and the gossip Replica contract."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import ORSet, smallset
from gossip.errors import PayloadError
from node.errors import InvalidValue
from node.state.item import ItemKey, decode_item, encode_item
from node.state.store import LikeStore

POST = ItemKey("post", 1)
PHOTO = ItemKey("photo", 7)


def index_of(store: LikeStore, users: range) -> dict[int, list[ItemKey]]:
    """What the reverse index says, user by user."""
    return {u: store.liked_items(u, after=None, limit=10_000)[0] for u in users}


def truth_of(store: LikeStore, keys: list[ItemKey], users: range) -> dict[int, list[ItemKey]]:
    """What the liker sets say, user by user."""
    return {u: sorted(k for k in keys if store.liked(k, u)) for u in users}


def sync(source: LikeStore, target: LikeStore) -> None:
    """Ship the source's pending deltas to the target."""
    for key, payload in source.drain_deltas():
        target.merge(key, payload)


def test_a_like_counts_once_however_often_it_is_repeated() -> None:
    store = LikeStore("n1-a.1")
    first, second = store.like(POST, 5), store.like(POST, 5)
    assert (first.changed, first.count) == (True, 1)
    assert (second.changed, second.count) == (False, 1)
    assert store.liked(POST, 5) and store.count(POST) == 1


def test_unlike_removes_and_is_idempotent() -> None:
    store = LikeStore("n1-a.1")
    store.like(POST, 5)
    store.like(POST, 6)
    assert store.unlike(POST, 5).changed
    again = store.unlike(POST, 5)
    assert (again.changed, again.count) == (False, 1)
    assert store.unlike(ItemKey("post", 99), 5).count == 0
    assert not store.liked(POST, 5) and store.liked(POST, 6)


def test_repeated_likes_and_noop_unlikes_make_no_deltas() -> None:
    store = LikeStore("n1-a.1")
    store.like(POST, 5)
    store.drain_deltas()
    store.like(POST, 5)
    store.unlike(POST, 6)
    store.unlike(PHOTO, 6)
    assert store.drain_deltas() == []


def test_counters_go_up_and_down_and_zero_is_a_read() -> None:
    store = LikeStore("n1-a.1")
    assert store.add_to_counter(POST, "views", 0) == 0
    assert len(store) == 0  # a zero delta creates nothing
    assert store.add_to_counter(POST, "views", 5) == 5
    assert store.add_to_counter(POST, "views", -2) == 3
    assert store.add_to_counter(POST, "shares", 1) == 1
    assert store.counters(POST) == {"shares": 1, "views": 3}
    assert store.counters(PHOTO) == {}


def test_an_item_holds_a_bounded_number_of_counters() -> None:
    store = LikeStore("n1-a.1", max_counters_per_item=2)
    store.add_to_counter(POST, "a", 1)
    store.add_to_counter(POST, "b", 1)
    with pytest.raises(InvalidValue):
        store.add_to_counter(POST, "c", 1)
    assert store.add_to_counter(POST, "a", 1) == 2
    assert store.counters(POST) == {"a": 2, "b": 1}


def test_likers_and_liked_items_page_in_order() -> None:
    store = LikeStore("n1-a.1")
    for user in (30, 10, 20, 40):
        store.like(POST, user)
    assert store.likers(POST, after=None, limit=3) == ([10, 20, 30], True)
    assert store.likers(POST, after=30, limit=3) == ([40], False)
    assert store.likers(PHOTO, after=None, limit=3) == ([], False)
    keys = [ItemKey("post", 2), ItemKey("photo", 9), ItemKey("post", 1), ItemKey("a", 2**64 - 1)]
    for key in keys:
        store.like(key, 7)
    first, more = store.liked_items(7, after=None, limit=2)
    assert first == [ItemKey("a", 2**64 - 1), ItemKey("photo", 9)] and more
    assert store.liked_items(7, after=first[-1], limit=5) == ([ItemKey("post", 1), ItemKey("post", 2)], False)


def test_deltas_of_one_item_are_joined_into_one_payload() -> None:
    store = LikeStore("n1-a.1")
    for user in range(5):
        store.like(POST, user)
    store.unlike(POST, 3)
    store.add_to_counter(POST, "views", 2)
    store.like(PHOTO, 1)
    drained = dict(store.drain_deltas())
    assert set(drained) == {POST.to_bytes(), PHOTO.to_bytes()}
    delta = decode_item(drained[POST.to_bytes()], max_bytes=1 << 20)
    assert delta.likers.value() == {0, 1, 2, 4} and delta.counter_values() == {"views": 2}
    assert store.drain_deltas() == []


def test_merged_deltas_converge_and_keep_the_reverse_index_right() -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    a.like(POST, 1)
    a.like(PHOTO, 1)
    b.like(POST, 2)
    sync(a, b)
    sync(b, a)
    assert b.liked_items(1, after=None, limit=10)[0] == [PHOTO, POST]
    assert a.liked_items(2, after=None, limit=10)[0] == [POST]
    b.unlike(POST, 1)
    sync(b, a)
    assert a.liked_items(1, after=None, limit=10)[0] == [PHOTO]
    assert a.count(POST) == b.count(POST) == 1
    assert a.fingerprint() == b.fingerprint()


def test_the_same_user_liking_on_two_nodes_counts_once() -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    a.like(POST, 9)
    b.like(POST, 9)
    sync(a, b)
    sync(b, a)
    assert a.count(POST) == b.count(POST) == 1


def test_concurrent_like_and_unlike_the_like_wins() -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    a.like(POST, 9)
    sync(a, b)
    b.unlike(POST, 9)
    a.unlike(POST, 9)
    a.like(POST, 9)  # a fresh like b has not seen
    sync(a, b)
    sync(b, a)
    assert a.liked(POST, 9) and b.liked(POST, 9)
    assert a.liked_items(9, after=None, limit=5)[0] == b.liked_items(9, after=None, limit=5)[0] == [POST]


def test_full_states_repair_what_deltas_missed() -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    for user in range(10):
        a.like(POST, user)
    a.unlike(POST, 4)
    a.add_to_counter(POST, "views", 3)
    a.drain_deltas()  # lost in transit
    state = a.state(POST.to_bytes())
    assert state is not None and b.state(POST.to_bytes()) is None
    b.merge(POST.to_bytes(), state)
    b.merge(POST.to_bytes(), state)  # a duplicate is harmless
    assert b.digest(POST.to_bytes()) == a.digest(POST.to_bytes())
    assert b.likers(POST, after=None, limit=100)[0] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert b.counters(POST) == {"views": 3}
    assert b.liked_items(4, after=None, limit=5)[0] == []


def test_digest_is_cached_until_the_item_changes() -> None:
    store = LikeStore("n1-a.1")
    store.like(POST, 1)
    key = POST.to_bytes()
    first = store.digest(key)
    assert store.digest(key) is first
    store.like(POST, 2)
    assert store.digest(key) != first
    assert store.digest(ItemKey("post", 404).to_bytes()) == b""


def test_drain_changed_returns_everything_first_then_only_changes() -> None:
    store = LikeStore("n1-a.1")
    store.like(POST, 1)
    store.like(PHOTO, 1)
    assert set(store.drain_changed()) == {POST.to_bytes(), PHOTO.to_bytes()}
    assert set(store.drain_changed()) == set()
    other = LikeStore("n2-b.1")
    other.like(POST, 2)
    sync(other, store)
    assert set(store.drain_changed()) == {POST.to_bytes()}


@pytest.mark.parametrize(
    ("key", "payload"),
    [
        (b"\x04post" + bytes(8), b""),
        (b"\x04post" + bytes(8), b"\x01\xc1"),
        (b"\x04post" + bytes(8), b"\x02\x92\xc4\x00\x90"),
        (b"\x04post" + bytes(8), b"\x01\x92\xc4\x03abc\x90"),
        (b"\x04Post" + bytes(8), None),
        (b"\x04post" + bytes(7), None),
        (b"", None),
    ],
)
def test_an_invalid_payload_or_key_raises_payload_error_and_changes_nothing(
    key: bytes, payload: bytes | None
) -> None:
    store = LikeStore("n1-a.1")
    store.like(POST, 1)
    before = store.state(POST.to_bytes())
    good = LikeStore("x-y.1")
    good.like(POST, 2)
    with pytest.raises(PayloadError):
        store.merge(key, payload if payload is not None else good.state(POST.to_bytes()) or b"")
    assert store.state(POST.to_bytes()) == before and len(store) == 1


def test_a_payload_holding_a_counter_where_likers_belong_is_rejected() -> None:
    store, other = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    other.add_to_counter(POST, "views", 1)
    payload = other.state(POST.to_bytes())
    assert payload is not None
    likers, counters, unliked = msgpack.unpackb(payload[1:])
    swapped = b"\x01" + msgpack.packb([counters[0][1], [["views", likers]], unliked])
    with pytest.raises(PayloadError):
        store.merge(POST.to_bytes(), swapped)
    assert len(store) == 0


def test_an_unlike_delta_is_indexed_without_comparing_the_whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    for user in range(1000):
        a.like(POST, user)
    sync(a, b)
    a.unlike(POST, 10)
    a.unlike(POST, 11)
    a.like(POST, 5000)

    def no_snapshots(self: ORSet) -> frozenset[int]:
        raise AssertionError("the merge copied the liker set")

    monkeypatch.setattr(ORSet, "value", no_snapshots)
    sync(a, b)
    assert b.count(POST) == 999
    assert b.liked_items(10, after=None, limit=5)[0] == [] and b.liked_items(5000, after=None, limit=5)[
        0
    ] == [POST]


def test_a_delta_that_names_too_few_unliked_users_is_caught_and_reindexed() -> None:
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    for user in (1, 2, 3):
        a.like(POST, user)
    sync(a, b)
    a.unlike(POST, 1)
    a.unlike(POST, 2)
    [(key, payload)] = a.drain_deltas()
    delta = decode_item(payload, max_bytes=1 << 20)
    assert delta.unliked == {1, 2}
    delta.unliked = {1}
    b.merge(key, encode_item(delta))
    assert b.liked_items(2, after=None, limit=5)[0] == [] and b.liked_items(3, after=None, limit=5)[0] == [
        POST
    ]


def test_past_the_cap_a_delta_names_no_unliked_users_and_still_indexes_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("node.state.outbox.MAX_UNLIKED_HINTS", 2)
    a, b = LikeStore("n1-a.1"), LikeStore("n2-b.1")
    for user in range(6):
        a.like(POST, user)
    sync(a, b)
    for user in range(4):
        a.unlike(POST, user)
    [(key, payload)] = a.drain_deltas()
    assert decode_item(payload, max_bytes=1 << 20).unliked == set()
    b.merge(key, payload)
    assert [b.liked_items(u, after=None, limit=5)[0] for u in range(6)] == [[]] * 4 + [[POST]] * 2
    a.unlike(POST, 4)  # a fresh pending delta names its users again
    assert decode_item(a.drain_deltas()[0][1], max_bytes=1 << 20).unliked == {4}


operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["like", "unlike", "sync", "repair"]),
        st.integers(0, 3),
        st.integers(0, 4),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=60,
)


def play(
    stores: dict[str, LikeStore],
    keys: list[ItemKey],
    outbox: dict[str, list[tuple[bytes, bytes]]],
    step: tuple[str, str, int, int, str],
) -> None:
    """One step of ``operations``: a like, an unlike, a full state shipped to a peer (anti-entropy),
    or the deltas so far gossiped to a peer (sometimes skipping one: lost in transit)."""
    name, op, item, user, peer = step
    store = stores[name]
    if op == "like":
        store.like(keys[item], user)
    elif op == "unlike":
        store.unlike(keys[item], user)
    elif op == "repair":
        state = store.state(keys[item].to_bytes())
        if state is not None:
            stores[peer].merge(keys[item].to_bytes(), state)
    else:
        outbox[name].extend(store.drain_deltas())
        for raw, payload in outbox[name][item % 2 :]:
            stores[peer].merge(raw, payload)


@given(operations)
def test_the_reverse_index_always_agrees_with_the_liker_sets(
    ops: list[tuple[str, str, int, int, str]],
) -> None:
    stores = {name: LikeStore(f"{name}-0000000000000000.1") for name in "abc"}
    keys = [ItemKey("post", i) for i in range(4)]
    outbox: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in stores}
    for step in ops:
        play(stores, keys, outbox, step)
        for checked in stores.values():
            assert index_of(checked, range(5)) == truth_of(checked, keys, range(5))
            assert checked.likes == sum(checked.count(key) for key in keys)
    for source in stores.values():  # anti-entropy: full states everywhere
        for key in keys:
            state = source.state(key.to_bytes())
            if state is not None:
                for target in stores.values():
                    target.merge(key.to_bytes(), state)
    prints = {store.fingerprint() for store in stores.values()}
    assert len(prints) == 1
    for checked in stores.values():
        assert index_of(checked, range(5)) == truth_of(checked, keys, range(5))


@contextmanager
def packing_up_to(elements: int) -> Iterator[None]:
    """Items are held packed up to ``elements`` likers (below 0: never) inside the block."""
    saved, smallset.MAX_ELEMENTS = smallset.MAX_ELEMENTS, elements
    try:
        yield
    finally:
        smallset.MAX_ELEMENTS = saved


@given(operations)
def test_a_store_holding_small_items_packed_is_one_that_never_packs(
    ops: list[tuple[str, str, int, int, str]],
) -> None:
    """Items packed up to two likers (so they move in and out of the packed form) and items never
    packed, fed the same operations: the same answers, states, deltas, index and fingerprints."""
    twins = [{name: LikeStore(f"{name}-0000000000000000.1") for name in "abc"} for _ in range(2)]
    keys = [ItemKey("post", i) for i in range(4)]
    outboxes: list[dict[str, list[tuple[bytes, bytes]]]] = [{name: [] for name in "abc"} for _ in range(2)]
    for step in ops:
        for stores, outbox, limit in zip(twins, outboxes, (2, -1), strict=True):
            with packing_up_to(limit):
                play(stores, keys, outbox, step)
        packed, plain = twins
        for name in "abc":
            assert [packed[name].state(k.to_bytes()) for k in keys] == [
                plain[name].state(k.to_bytes()) for k in keys
            ]
            assert index_of(packed[name], range(5)) == index_of(plain[name], range(5))
            assert packed[name].likes == plain[name].likes
            assert packed[name].fingerprint() == plain[name].fingerprint()
    assert all(o == p for o, p in zip(*outboxes, strict=True))


def test_a_small_item_is_held_packed_until_it_grows_and_again_once_small() -> None:
    store, peer = LikeStore("n1-a.1"), LikeStore("n2-a.1")
    raw = POST.to_bytes()

    def packed() -> bool:
        return type(store._items[raw]) is bytes

    store.like(POST, 1)
    peer.like(POST, 2)
    sync(peer, store)  # a peer's like joins the packed form
    assert packed() and store.count(POST) == 2 and store.liked_items(2, after=None, limit=5)[0] == [POST]
    for user in range(3, 3 + smallset.MAX_ELEMENTS):
        store.like(POST, user)
    assert not packed() and store.count(POST) == smallset.MAX_ELEMENTS + 2
    for user in range(3, 3 + smallset.MAX_ELEMENTS):
        store.unlike(POST, user)
    assert packed() and store.count(POST) == 2 and store.item(raw).likers.value() == {1, 2}
    store.add_to_counter(POST, "views", 1)  # counters are not packed
    assert not packed() and store.counters(POST) == {"views": 1} and store.count(POST) == 2
    store.like(PHOTO, 1)
    assert store.state(PHOTO.to_bytes()) == encode_item(store.item(PHOTO.to_bytes()))

    # A peer's state of a small item new here is held packed as it is; of one held here, joined.
    peer.like(PHOTO, 9)
    state = peer.state(PHOTO.to_bytes())
    assert state is not None
    fresh = LikeStore("n3-a.1")
    fresh.merge(PHOTO.to_bytes(), state)
    assert type(fresh._items[PHOTO.to_bytes()]) is bytes and fresh.state(PHOTO.to_bytes()) == state
    assert fresh.liked_items(9, after=None, limit=5)[0] == [PHOTO]
    store.merge(memoryview(PHOTO.to_bytes()), state)  # type: ignore[arg-type]  # as a frame hands it over
    assert store.item(PHOTO.to_bytes()).likers.value() == {1, 9}


# -- many likes and unlikes at once ------------------------------------------------------------------


def apply_one_by_one(
    store: LikeStore, ops: list[tuple[bool, ItemKey, int]], dots_from: int
) -> tuple[list[bool], list[int], list[tuple[tuple[str, int], ...]]]:
    """What ``apply_likes`` must answer, found with ``like`` and ``unlike`` (and ``like_dots`` after a
    like, before an unlike, from op ``dots_from`` on)."""
    changed, counts, dots = [], [], []
    for i, (liking, key, user) in enumerate(ops):
        if i >= dots_from and not liking:
            dots.append(store.like_dots(key, user))
        result = store.like(key, user) if liking else store.unlike(key, user)
        if i >= dots_from and liking:
            dots.append(store.like_dots(key, user))
        changed.append(result.changed)
        counts.append(result.count)
    return changed, counts, dots


def as_sets(dirty: dict[bytes, list[int]]) -> dict[bytes, set[int]]:
    """The dirty items and their users, however often each is listed."""
    return {raw: set(users) for raw, users in dirty.items()}


def assert_same_store(
    bulk: LikeStore, single: LikeStore, keys: list[ItemKey], users: range
) -> list[tuple[bytes, bytes]]:
    """Everything a store shows others (states, deltas, log, dirty items, index, digests) is the same;
    returns the deltas drained."""
    assert bulk.drain_journal() == single.drain_journal()
    deltas = sorted(bulk.drain_deltas())
    assert deltas == sorted(single.drain_deltas())
    assert as_sets(bulk.drain_dirty()) == as_sets(single.drain_dirty())
    assert set(bulk.drain_changed()) == set(single.drain_changed())
    for key in keys:
        assert bulk.state(key.to_bytes()) == single.state(key.to_bytes())
    assert index_of(bulk, users) == index_of(single, users) == truth_of(bulk, keys, users)
    assert bulk.likes == single.likes and len(bulk) == len(single)
    assert bulk.fingerprint() == single.fingerprint()
    return deltas


def test_apply_likes_answers_each_op_as_if_applied_alone() -> None:
    store = LikeStore("n1-a.1")
    ops = [(True, POST, 1), (True, POST, 1), (True, PHOTO, 2), (False, POST, 1), (True, POST, 1)]
    ops.append((False, PHOTO, 3))
    keys, users, liking = [k.to_bytes() for _, k, _ in ops], [u for *_, u in ops], [x for x, *_ in ops]
    changed, counts, dots = store.apply_likes(keys, users, liking, dots_from=3)
    assert changed == [True, False, True, True, True, False]
    assert counts == [1, 1, 1, 0, 1, 1]
    assert dots == [(("n1-a.1", 1),), (("n1-a.1", 2),), ()]  # the unliked dot, the new like's, nothing
    assert store.liked(POST, 1) and store.liked_items(1, after=None, limit=5)[0] == [POST]
    assert len(store.drain_journal()) == 4  # one record per change, as one at a time
    assert store.apply_likes([], [], []) == ([], [], [])


batches = st.lists(
    st.one_of(
        st.tuples(
            st.just("batch"),
            st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 4)), max_size=12),
            st.integers(0, 12),
        ),
        st.tuples(st.sampled_from(["drain", "peer"]), st.just([]), st.just(0)),
        st.tuples(
            st.just("peer_op"),
            st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 4)), max_size=3),
            st.just(0),
        ),
    ),
    max_size=12,
)


@given(batches, st.sampled_from([2, 3, 4096]))
def test_apply_likes_equals_like_and_unlike_one_at_a_time(
    steps: list[tuple[str, list[tuple[bool, int, int]], int]], hot: int
) -> None:
    """Batches with repeats, unlikes, likes again, of items and users also liked on a peer whose
    deltas both stores merge, items turning hot and cold again: the bulk path leaves what one op at a
    time leaves, answering the same."""
    bulk, single = LikeStore("n1-a.1", hot_item_likes=hot), LikeStore("n1-a.1", hot_item_likes=hot)
    peer = LikeStore("n2-b.1")
    keys = [ItemKey("post", i) for i in range(3)] + [ItemKey("photo", 9)]
    for step, raw_ops, dots_from in steps:
        ops = [(liking, keys[item], user) for liking, item, user in raw_ops]
        if step == "batch":
            expected = apply_one_by_one(single, ops, dots_from)
            got = bulk.apply_likes(
                [key.to_bytes() for _, key, _ in ops],
                [user for *_, user in ops],
                [liking for liking, *_ in ops],
                dots_from=dots_from,
            )
            assert got == expected
        elif step == "peer_op":
            for liking, key, user in ops:
                _ = peer.like(key, user) if liking else peer.unlike(key, user)
        elif step == "peer":  # the peer's deltas, and once in a while the stores' own, go round
            for raw, payload in peer.drain_deltas():
                bulk.merge(raw, payload)
                single.merge(raw, payload)
        deltas = assert_same_store(bulk, single, keys, range(5))
        if step == "drain":  # the peer hears of the stores' likes, so its unlikes can remove them
            for raw, payload in deltas:
                peer.merge(raw, payload)
