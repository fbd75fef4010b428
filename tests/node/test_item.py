"""Item keys and payloads: compact, unambiguous, deterministic, and a trust boundary."""

from __future__ import annotations

import asyncio
import threading

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import node.state.item
from crdt import ORSet, PNCounter, encode, smallset
from crdt.dots import actor_index, make_dot
from gossip.errors import PayloadError
from node.errors import ItemCodecError
from node.state.item import (
    MAX_ID,
    ONE_LIKE_PREFIX,
    Item,
    ItemKey,
    decode_item,
    decode_stored_one_like,
    encode_item,
    encode_item_aside,
    encode_small_item,
    encode_stored,
)
from node.state.store import LikeStore

content_types = st.from_regex(r"[a-z][a-z0-9_]{0,19}", fullmatch=True)
ids = st.integers(0, MAX_ID)


@given(content_types, ids, content_types, ids)
def test_keys_round_trip_and_never_collide(t1: str, i1: int, t2: str, i2: int) -> None:
    a, b = ItemKey(t1, i1), ItemKey(t2, i2)
    assert ItemKey.from_bytes(a.to_bytes()) == a
    assert (a.to_bytes() == b.to_bytes()) == (a == b)
    assert len(a.to_bytes()) == 1 + len(t1) + 8


@pytest.mark.parametrize(
    "raw", [b"", b"\x00" + bytes(8), b"\x04post" + bytes(9), b"\x02A1" + bytes(8), b"\x02\xff\xfe" + bytes(8)]
)
def test_malformed_keys_are_rejected(raw: bytes) -> None:
    with pytest.raises(ItemCodecError):
        ItemKey.from_bytes(raw)


@given(
    st.lists(st.integers(0, MAX_ID), max_size=20),
    st.dictionaries(st.sampled_from(["views", "shares"]), st.integers(-5, 5)),
)
def test_payloads_round_trip_and_equal_items_encode_equally(
    users: list[int], counters: dict[str, int]
) -> None:
    forward, backward = Item(), Item()
    for user in users:
        forward.likers.add("a", user)
    for user in users:  # the same adds in the same order on an independent item
        backward.likers.add("a", user)
    for name, amount in counters.items():
        for item in (forward, backward):
            counter = item.counters.setdefault(name, PNCounter())
            counter.increment("a", max(amount, 0))
            counter.decrement("a", max(-amount, 0))
    payload = encode_item(forward)
    assert payload == encode_item(backward)
    assert decode_item(payload, max_bytes=1 << 20) == forward


def test_payloads_over_the_cap_are_rejected_unread() -> None:
    item = Item()
    for user in range(100):
        item.likers.add("a", user)
    payload = encode_item(item)
    with pytest.raises(ItemCodecError, match="exceeds"):
        decode_item(payload, max_bytes=len(payload) - 1)


def payload_of(*parts: object) -> bytes:
    """A hand-made payload: version byte, then ``parts`` as one msgpack array."""
    body: bytes = msgpack.packb(list(parts))
    return b"\x01" + body


EMPTY_SET, EMPTY_COUNTER = encode(ORSet()), encode(PNCounter())


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x01",
        b"\x02" + payload_of(EMPTY_SET, [], [])[1:],  # an unknown version
        b"\x01\xc1",  # not msgpack
        payload_of(EMPTY_SET, []),  # a part missing
        payload_of(EMPTY_SET, [], [], []),  # a part too many
        payload_of(b"", [], []),  # likers not a CRDT
        payload_of(EMPTY_COUNTER, [], []),  # likers not an ORSet
        payload_of(EMPTY_SET, [["views", EMPTY_SET]], []),  # a counter not a PNCounter
        payload_of(EMPTY_SET, [["views"]], []),
        payload_of(EMPTY_SET, {"views": EMPTY_COUNTER}, []),
        payload_of(EMPTY_SET, [], [2, 1]),  # unliked not ascending
        payload_of(EMPTY_SET, [], [1, 1]),
        payload_of(EMPTY_SET, [], [-1]),
        payload_of(EMPTY_SET, [], ["1"]),
        payload_of(EMPTY_SET, [], {}),
    ],
)
def test_malformed_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(ItemCodecError):
        decode_item(payload, max_bytes=1 << 20)


def test_counter_names_must_be_valid_and_ascending() -> None:
    for counters in (
        [["b", EMPTY_COUNTER], ["a", EMPTY_COUNTER]],
        [["a", EMPTY_COUNTER], ["a", EMPTY_COUNTER]],
        [["Bad", EMPTY_COUNTER]],
    ):
        with pytest.raises(ItemCodecError, match="ascending"):
            decode_item(payload_of(EMPTY_SET, counters, []), max_bytes=1 << 20)


def test_unlike_deltas_name_their_users_and_states_name_none() -> None:
    item = Item()
    item.likers.add("a", 5)
    delta = Item(likers=item.likers.remove(5), unliked={5})
    assert decode_item(encode_item(delta), max_bytes=1 << 20).unliked == {5}
    assert decode_item(encode_item(item), max_bytes=1 << 20).unliked == set()


async def test_a_big_item_is_encoded_beside_the_event_loop_from_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node.state.item, "ASIDE_LIKES", 50)
    encoders: list[int] = []

    def recording(item: Item) -> bytes:
        encoders.append(threading.get_ident())
        return encode_item(item)

    monkeypatch.setattr(node.state.item, "encode_item", recording)
    small, big = Item(), Item(counters={"views": PNCounter()})
    small.likers.add("n1", 1)
    for user in range(200):
        big.likers.add("n1" if user % 2 else "n2", user)
    big.likers.remove(7)
    big.counters["views"].increment("n1", 3)
    expected = encode_item(big)
    pending = asyncio.ensure_future(encode_item_aside(big))
    await asyncio.sleep(0)  # the copy is taken: changes from now on are not in the bytes
    big.likers.add("n1", 10_000)
    assert await pending == expected
    assert await encode_item_aside(small) == encode_item(small)
    assert encoders == [encoders[0], threading.get_ident()]
    assert encoders[0] != threading.get_ident()


def test_a_copy_is_independent() -> None:
    item = Item(counters={"views": PNCounter()})
    item.likers.add("n1", 5)
    clone = item.copy()
    item.likers.add("n1", 6)
    item.counters["views"].increment("n1", 1)
    assert clone.likers.value() == {5} and clone.counters["views"].value() == 0
    assert decode_item(encode_item(clone), max_bytes=1 << 20) == clone


# -- the item store's form of a one-like item ----------------------------------------------------


@given(
    st.sampled_from(["n1-0123456789abcdef.1", "n2-fedcba9876543210.7"]),
    st.integers(1, 40),
    st.integers(0, MAX_ID),
    st.data(),
)
def test_a_one_like_item_is_stored_in_its_own_form_and_read_back_as_the_same_set(
    writer: str, top: int, user: int, data: st.DataObject
) -> None:
    counter = data.draw(st.integers(1, top))
    # The set the general wire form reads: the writer's 1..top seen, ``user`` liked under ``counter``.
    packed = smallset.from_wire([[writer], [0, top], [], [user, 0, counter], []])
    assert packed is not None and smallset.size(packed) == 1
    stored = encode_stored(packed)
    assert stored[:1] == ONE_LIKE_PREFIX and len(stored) < len(encode_small_item(packed))
    assert decode_stored_one_like(stored) == packed


def test_a_small_item_of_several_likes_is_stored_in_the_general_form() -> None:
    packed = smallset.pack(
        ORSet.of_dots(
            [
                (1, make_dot(actor_index("n1-0123456789abcdef.1"), 1)),
                (2, make_dot(actor_index("n1-0123456789abcdef.1"), 2)),
            ]
        )
    )
    assert packed is not None and encode_stored(packed) == encode_small_item(packed)


@pytest.mark.parametrize(
    "payload",
    [
        ONE_LIKE_PREFIX,
        ONE_LIKE_PREFIX + b"\xc1",
        ONE_LIKE_PREFIX + msgpack.packb(["n1-0123456789abcdef.1", 1, 5]),
        ONE_LIKE_PREFIX + msgpack.packb(["n1-0123456789abcdef.1", 1, 5, 2]),  # a dot past its context
        ONE_LIKE_PREFIX + msgpack.packb(["", 1, 5, 1]),  # no writer
        ONE_LIKE_PREFIX + msgpack.packb(["n1-0123456789abcdef.1", 1, -5, 1]),
        ONE_LIKE_PREFIX + msgpack.packb([["n1"], 1, 5, 1]),
    ],
)
def test_a_damaged_stored_one_like_item_is_no_set(payload: bytes) -> None:
    assert decode_stored_one_like(payload) is None


def test_only_the_item_store_may_use_its_own_form() -> None:
    packed = smallset.pack(ORSet.of_dots([(5, make_dot(actor_index("n1-0123456789abcdef.1"), 1))]))
    assert packed is not None
    store = LikeStore("n2-fedcba9876543210.1")
    key = ItemKey("post", 1).to_bytes()
    with pytest.raises(PayloadError):  # a peer's delta in it is malformed
        store.merge(key, encode_stored(packed))
    assert store.restore([(key, encode_stored(packed))]) == 1  # nor does the log hold it
    assert store.restore_stored([(key, encode_stored(packed))]) == 0
    assert store.count(ItemKey("post", 1)) == 1 and store.unflushed.drain() == set()
