"""Fuzzing a whole gossiping node: no frame crashes it, and no rejected frame changes it.

The frame decoder is fuzzed on its own in ``test_wire``; here the frames go through the transport's
delivery into a started ``Gossiper`` over the node's real ``LikeStore``, the way a peer's frames do.
Correctly signed frames are included: a bug in one member (an insider) must not take another down.
Every frame must end up counted exactly once, as received or as rejected, and the only exception a
frame may raise is ``FrameError`` (the transport's cue to reject); the handlers must raise nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import GossipConfig, Gossiper, MemberInfo, MemberState, MemoryNetwork
from gossip.errors import PayloadError
from gossip.messages import (
    MAX_SEQ,
    Ack,
    Deltas,
    Keys,
    Members,
    Message,
    Origin,
    Ping,
    PingReq,
    Replicate,
    Replicated,
    States,
    Tree,
    to_body,
)
from gossip.security import Keyring
from gossip.transport import Address
from gossip.wire import LENGTH_PREFIX, PROTOCOL_VERSION, FrameCodec, MessageType
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.gossip.conftest import KEY, OTHER_KEY

NODE: Address = ("10.0.0.1", 7000)
PEER: Address = ("10.0.0.2", 7000)
CAP = 1 << 20
insider = FrameCodec(Keyring([KEY]), CAP)
outsider = FrameCodec(Keyring([OTHER_KEY]), CAP)


@dataclasses.dataclass
class Target:
    """A started node alone on a network, and the way frames reach it."""

    network: MemoryNetwork
    store: LikeStore
    gossiper: Gossiper

    def deliver(self, frame: bytes) -> None:
        """Deliver ``frame`` as the network would; check it was counted exactly once."""
        stats = self.gossiper.stats()
        self.network._deliver(PEER, NODE, frame)
        after = self.gossiper.stats()
        counted = after["frames_received"] + after["frames_rejected"]
        assert counted == stats["frames_received"] + stats["frames_rejected"] + 1
        assert after["handler_errors"] == 0 and not self.network.handler_errors, self.network.handler_errors

    def snapshot(self) -> tuple[str, list[tuple[str, Address, MemberState, int]]]:
        members = [(m.name, m.address, m.state, m.incarnation) for m in self.gossiper.members()]
        return self.store.fingerprint(), members


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    network = MemoryNetwork(max_frame_bytes=CAP)
    store = LikeStore("n0-0000000000000000.1")
    key = ItemKey("post", 1)
    for user in range(5):
        store.like(key, user)
    store.unlike(key, 3)
    store.add_to_counter(key, "views", 2)
    config = dataclasses.replace(
        GossipConfig.local("n0", keyring=(KEY,), host=NODE[0], port=NODE[1]), max_frame_bytes=CAP
    )
    gossiper = Gossiper(config, store, network.transport(NODE))
    await gossiper.start()
    try:
        yield Target(network, store, gossiper)
    finally:
        await gossiper.stop()


def signed(kind: int, body: bytes) -> bytes:
    """A correctly signed frame of type byte ``kind`` around any ``body`` bytes."""
    data = bytes((PROTOCOL_VERSION, kind)) + Keyring([KEY]).primary_id + body
    tag = Keyring([KEY]).sign(data)
    return LENGTH_PREFIX.pack(len(tag) + len(data)) + tag + data


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=25,
)

#: Any frame at all: raw bytes, forged ones, and signed ones of any type byte and body.
garbage_frames = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: LENGTH_PREFIX.pack(len(b)) + b),
    st.tuples(st.integers(0, 255), st.binary(max_size=300)).map(lambda t: signed(*t)),
    st.tuples(st.sampled_from(MessageType), msgpack_values).map(
        lambda t: signed(t[0], msgpack.packb(t[1], use_bin_type=True))
    ),
    st.tuples(st.sampled_from(MessageType), msgpack_values).map(lambda t: outsider.encode(t[0], t[1])),
)


async def test_no_frame_crashes_the_node_and_a_rejected_one_changes_nothing(target: Target) -> None:
    @given(garbage_frames)
    def check(frame: bytes) -> None:
        before = target.snapshot()
        received = target.gossiper.stats()["frames_received"]
        target.deliver(frame)
        if target.gossiper.stats()["frames_received"] == received:  # rejected
            assert target.snapshot() == before

    check()
    assert target.store.likers(ItemKey("post", 1), after=None, limit=10)[0] == [0, 1, 2, 4]


# -- well-formed messages with hostile contents (an insider) -------------------------------------

names = st.sampled_from(["n0", "n1"]) | st.text(min_size=1, max_size=6)  # n0: the node itself
addresses = st.tuples(st.sampled_from(["10.0.0.2", "10.0.0.1", "x"]), st.integers(1, 65535))
incarnations = st.sampled_from([0, MAX_SEQ - 1, MAX_SEQ]) | st.integers(0, MAX_SEQ)
members = st.builds(MemberInfo, names, addresses, st.sampled_from(MemberState), incarnations)
origins = st.builds(Origin, names, addresses)
seqs = st.integers(0, MAX_SEQ)


def _valid_items() -> list[tuple[bytes, bytes]]:
    source = LikeStore("n9-0000000000000009.1")
    source.like(ItemKey("post", 1), 3)
    source.unlike(ItemKey("post", 1), 3)
    source.like(ItemKey("post", 2), 9)
    source.add_to_counter(ItemKey("post", 1), "views", -4)
    return source.drain_deltas()


VALID_ITEMS = _valid_items()
item_keys = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([key for key, _ in VALID_ITEMS] + [ItemKey("post", 2**64 - 1).to_bytes()]),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real delta with a few bytes overwritten, cut or extended."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    payload = bytearray(draw(st.sampled_from(VALID_ITEMS))[1])
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(payload) - 1))
        payload[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(payload) + 4))
    return bytes(payload[:cut]) + draw(st.binary(max_size=4))


items = st.lists(st.tuples(item_keys, payloads()), max_size=4).map(tuple)

#: Every message type, well formed, with contents drawn from the whole range the parser accepts.
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, seqs, members, names, st.lists(members, max_size=3).map(tuple)),
    st.builds(PingReq, seqs, members, members),
    st.builds(Ack, seqs, names, st.lists(members, max_size=3).map(tuple)),
    st.builds(Members, members, st.lists(members, max_size=3).map(tuple), st.booleans()),
    st.builds(Deltas, names, st.integers(0, 64), items),
    st.builds(
        Tree,
        origins,
        st.integers(0, 64),
        st.lists(st.tuples(st.integers(0, 2**32), st.binary(max_size=20)), max_size=4).map(tuple),
        st.lists(st.integers(0, 2**32), max_size=4).map(tuple),
    ),
    st.builds(
        Keys,
        origins,
        st.lists(
            st.tuples(
                st.integers(0, 2**32),
                st.lists(st.tuples(item_keys, st.binary(max_size=20)), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(States, origins, items, st.lists(item_keys, max_size=3).map(tuple)),
    st.builds(Replicate, origins, seqs, items),
    st.builds(Replicated, names, seqs),
)


def accepted_by_a_fresh_store(pairs: tuple[tuple[bytes, bytes], ...]) -> bool:
    """The oracle: whether any (key, payload) is a valid item a store would merge."""
    for key, payload in pairs:
        with contextlib.suppress(PayloadError):
            LikeStore("oracle-0000000000000000.1").merge(key, payload)
            return True
    return False


async def test_any_well_formed_message_from_an_insider_is_handled_without_error(target: Target) -> None:
    @given(messages)
    def check(message: Message) -> None:
        before = target.snapshot()
        target.deliver(insider.encode(message.kind, to_body(message)))
        fingerprint, _ = target.snapshot()
        carried: tuple[tuple[bytes, bytes], ...] = ()
        if isinstance(message, Deltas | Replicate):
            carried = message.items
        elif isinstance(message, States):
            carried = message.states
        if not accepted_by_a_fresh_store(carried):
            assert fingerprint == before[0], "a garbage payload changed the store"

    check()
    await asyncio.sleep(0.3)  # the loops now run on whatever state the messages left behind
    assert target.gossiper.stats()["handler_errors"] == 0


async def test_a_claim_at_the_largest_incarnation_does_not_silence_the_node(target: Target) -> None:
    """Refuting it must not push our incarnation past what the wire can carry."""
    me = target.gossiper.members()[0]
    claim = Members(
        dataclasses.replace(me, name="n1"),
        (dataclasses.replace(me, state=MemberState.DEAD, incarnation=MAX_SEQ),),
        True,
    )
    target.deliver(insider.encode(claim.kind, to_body(claim)))
    await asyncio.sleep(0.3)
    assert target.gossiper.stats()["handler_errors"] == 0
    assert target.gossiper.members()[0].incarnation == MAX_SEQ


def test_the_item_oracle_accepts_real_deltas() -> None:
    """Without this, the payload check above could pass by rejecting everything."""
    assert accepted_by_a_fresh_store(tuple(VALID_ITEMS))
    assert not accepted_by_a_fresh_store(((b"\x04post" + bytes(8), b"\x00garbage"),))
