"""The codec: exact round trips, equal states give equal bytes, and bad bytes give CodecError only."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import CodecError, GCounter, ORSet, PNCounter, decode, encode
from crdt.codec import VERSION, Tag
from tests.crdt.kinds import KINDS, Kind, histories


def values(kind: Kind) -> st.SearchStrategy[Any]:
    return histories(kind).flatmap(lambda h: st.sampled_from([*h[0], *h[1]]))


any_value = st.one_of(*(values(kind) for kind in KINDS))


@given(any_value)
def test_round_trip_is_exact(value: Any) -> None:
    data = encode(value)
    back = decode(data)
    assert type(back) is type(value)
    assert back == value
    assert back.value() == value.value()
    assert encode(back) == data


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 2**64 - 1)), max_size=30))
def test_equal_states_built_in_different_orders_encode_to_equal_bytes(adds: list[tuple[str, int]]) -> None:
    forwards, backwards = ORSet(), ORSet()
    deltas = [forwards.add(actor, element) for actor, element in adds]
    for delta in reversed(deltas):
        backwards.merge(delta)
    assert backwards == forwards
    assert encode(backwards) == encode(forwards)


@given(st.binary(max_size=200))
def test_random_bytes_raise_codec_error_only(data: bytes) -> None:
    try:
        value = decode(data)
    except CodecError:
        return
    assert encode(value) is not None  # a lucky valid buffer must be a usable value


@given(any_value, st.data())
def test_corrupted_encodings_raise_codec_error_or_decode_to_a_valid_value(
    value: Any, data: st.DataObject
) -> None:
    buf = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    for candidate in (bytes(buf), bytes(buf[:cut])):
        try:
            back = decode(candidate)
        except CodecError:
            continue
        assert decode(encode(back)) == back


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=6),
        max_leaves=30,
    ),
    st.sampled_from(list(Tag)),
)
def test_well_formed_msgpack_of_the_wrong_shape_raises_codec_error(body: Any, tag: Tag) -> None:
    data = bytes((VERSION, tag)) + msgpack.packb(body)
    try:
        back = decode(data)
    except CodecError:
        return
    assert decode(encode(back)) == back


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        bytes((VERSION + 1, Tag.ORSET)) + msgpack.packb([[], [], [], [], []]),
        bytes((VERSION, 99)) + msgpack.packb([]),
        encode(ORSet()) + b"\x00",  # trailing bytes
        bytes((VERSION, Tag.ORSET)) + msgpack.packb([["a"], [], [], [5, 0, 1], []]),  # dot not in context
        bytes((VERSION, Tag.ORSET)) + msgpack.packb([["a"], [0, 2], [], [5, 0, 1, 4, 0, 1], []]),  # dot twice
        bytes((VERSION, Tag.ORSET)) + msgpack.packb([["a"], [0, 2], [], [5, 0, 1, 4, 0, 2], []]),  # unsorted
        bytes((VERSION, Tag.ORSET)) + msgpack.packb([["a"], [0, 1], [], [-1, 0, 1], []]),  # negative user
        bytes((VERSION, Tag.ORSET)) + msgpack.packb([["b", "a"], [], [], [], []]),  # unsorted actors
        bytes((VERSION, Tag.GCOUNTER)) + msgpack.packb(["a", -1]),
        bytes((VERSION, Tag.GCOUNTER)) + msgpack.packb(["a", True]),
        bytes((VERSION, Tag.PNCOUNTER)) + msgpack.packb([["a", 1]]),
        bytes((VERSION, Tag.GCOUNTER)) + msgpack.packb({"a": 1}),
    ],
    ids=lambda d: d[:12].hex(),
)
def test_known_bad_buffers_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_oversized_buffers_are_refused_before_parsing() -> None:
    s = ORSet()
    for user in range(1000):
        s.add("n1", user)
    data = encode(s)
    with pytest.raises(CodecError, match="limit"):
        decode(data, max_bytes=len(data) - 1)
    assert decode(data, max_bytes=len(data)) == s


def test_counters_round_trip() -> None:
    g, p = GCounter(), PNCounter()
    g.increment("n1", 5)
    p.increment("n2", 2**63)
    p.decrement("n1", 7)
    assert decode(encode(g)) == g and decode(encode(p)) == p
    assert decode(encode(p)).value() == 2**63 - 7
