"""``ORSet.packed_wire``: the encoding of ``to_wire``, byte for byte, packed a chunk at a time."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crdt.orset_wire
from crdt import ORSet, decode, encode
from tests.crdt.kinds import ORSET, ORSET_COLUMNS, Kind, histories


@pytest.mark.parametrize("kind", [ORSET, ORSET_COLUMNS], ids=repr)
@given(data=st.data(), chunk=st.sampled_from([1, 2, 3, 7, 4096]))
def test_packed_wire_is_the_bytes_of_to_wire(kind: Kind, data: st.DataObject, chunk: int) -> None:
    with kind.configured():
        replicas, deltas = data.draw(histories(kind))
    original = crdt.orset_wire.PACK_CHUNK
    crdt.orset_wire.PACK_CHUNK = chunk
    try:
        for value in [*replicas, *deltas]:
            assert value.packed_wire() == msgpack.packb(value.to_wire(), use_bin_type=True)
    finally:
        crdt.orset_wire.PACK_CHUNK = original


def test_a_big_set_encodes_as_before_and_round_trips() -> None:
    big = ORSet()
    for user in range(10**12, 10**12 + 3 * crdt.orset_wire.PACK_CHUNK + 5):
        big.add("n1" if user % 3 else "n2", user)
    big.add("n2", 10**12)  # one element with two dots: a "multiple"
    big.remove(10**12 + 1)
    encoded = encode(big)
    assert encoded[2:] == msgpack.packb(big.to_wire(), use_bin_type=True)
    assert decode(encoded) == big
