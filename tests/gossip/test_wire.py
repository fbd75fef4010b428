"""Frames round-trip, and anything else raises FrameError and nothing else."""

from __future__ import annotations

import contextlib
import random
import tracemalloc
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import FrameError, MemberInfo, MemberState
from gossip.errors import FrameAuthError
from gossip.messages import (
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
    parse,
    to_body,
)
from gossip.security import Keyring
from gossip.wire import (
    COMPRESSED,
    FRAME_OVERHEAD,
    LENGTH_PREFIX,
    PROTOCOL_VERSION,
    FrameCodec,
    MessageType,
    payload_length,
)
from tests.gossip.conftest import KEY, OTHER_KEY

CAP = 64 * 1024
codec = FrameCodec(Keyring([KEY]), CAP)

ME = MemberInfo("n1", ("127.0.0.1", 7001), MemberState.ALIVE, 3)
SUSPECTED = MemberInfo("n2", ("10.0.0.2", 7002), MemberState.SUSPECT, 9)
ORIGIN = Origin("n1", ("127.0.0.1", 7001))
EVERY_MESSAGE: list[Message] = [
    Ping(1, ME, "n2", (SUSPECTED,)),
    PingReq(2**64 - 1, ME, SUSPECTED),
    Ack(5, "n2", (ME, SUSPECTED)),
    Members(ME, (ME, SUSPECTED), reply=True),
    Deltas("n1", 3, ((b"key", b"delta"), (b"", b""))),
    Tree(ORIGIN, 2, ((17, bytes(16)), (255, b"\xff" * 16))),
    Tree(ORIGIN, 4, ((9, bytes(16)),), (0, 3, 65535)),
    Keys(ORIGIN, ((65535, ((b"k", b"h" * 16),)), (0, ()))),
    States(ORIGIN, ((b"k", b"state"),), (b"wanted",)),
    Replicate(ORIGIN, 7, ((b"k", b"delta"),)),
    Replicated("n2", 2**64 - 1),
]


def frame_of(message: Message, signer: FrameCodec = codec) -> bytes:
    return signer.encode(message.kind, to_body(message))


def decode_message(frame: bytes, receiver: FrameCodec = codec) -> Message:
    return parse(*receiver.decode(frame))


def resign(frame: bytes, *, signed: bytes | None = None, key: bytes = KEY) -> bytes:
    """A frame with ``signed`` (version, type, key id, body) swapped in and a valid tag for it."""
    signed = frame[FRAME_OVERHEAD - 6 :] if signed is None else signed
    tag = Keyring([key]).sign(signed)
    return LENGTH_PREFIX.pack(len(tag) + len(signed)) + tag + signed


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_message(frame_of(message)) == message


def test_the_length_prefix_counts_the_rest_of_the_frame() -> None:
    frame = frame_of(EVERY_MESSAGE[0])
    assert LENGTH_PREFIX.unpack(frame[:4])[0] == len(frame) - 4
    assert frame[20] == PROTOCOL_VERSION and frame[21] == MessageType.PING


@pytest.mark.parametrize("position", [4, 10, 19, 20, 21, 23, 26, -1])
def test_a_flipped_bit_anywhere_after_the_prefix_fails_authentication(position: int) -> None:
    frame = bytearray(frame_of(EVERY_MESSAGE[3]))
    frame[position] ^= 0x01
    with pytest.raises(FrameError):
        codec.decode(bytes(frame))


def test_a_frame_signed_with_another_key_is_rejected() -> None:
    stranger = FrameCodec(Keyring([OTHER_KEY]), CAP)
    with pytest.raises(FrameAuthError, match="authentication"):
        codec.decode(frame_of(EVERY_MESSAGE[0], stranger))


def test_a_frame_naming_a_known_key_but_tagged_by_another_is_rejected() -> None:
    """The key id only picks the key to try; a stranger who copies our id still fails the tag."""
    signed = frame_of(EVERY_MESSAGE[0])[20:]
    with pytest.raises(FrameAuthError):
        codec.decode(resign(b"", signed=signed, key=OTHER_KEY))


def test_a_keyring_with_the_old_and_the_new_key_verifies_both() -> None:
    old, new = FrameCodec(Keyring([KEY]), CAP), FrameCodec(Keyring([OTHER_KEY]), CAP)
    rotating = FrameCodec(Keyring([OTHER_KEY, KEY]), CAP)
    for message in EVERY_MESSAGE:
        assert decode_message(frame_of(message, old), rotating) == message
        assert decode_message(frame_of(message, new), rotating) == message
    # It signs with the first key: members still on the old key alone cannot read it yet.
    assert decode_message(frame_of(EVERY_MESSAGE[0], rotating), new) == EVERY_MESSAGE[0]
    with pytest.raises(FrameError):
        old.decode(frame_of(EVERY_MESSAGE[0], rotating))


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 20, 26, -1])
def test_a_truncated_frame_is_rejected(cut: int) -> None:
    frame = frame_of(EVERY_MESSAGE[4])
    with pytest.raises(FrameError):
        codec.decode(frame[:cut])


def test_an_oversized_frame_is_rejected_before_anything_else() -> None:
    big = FrameCodec(Keyring([KEY]), 4 * CAP)
    noise = random.Random(0).randbytes(2 * CAP)  # incompressible: the frame really is that large
    frame = frame_of(Deltas("n1", 0, ((b"k", noise),)), big)
    with pytest.raises(FrameError, match="exceeds"):
        codec.decode(frame)
    with pytest.raises(FrameError, match="exceeds"):
        payload_length(frame[:4], CAP)
    with pytest.raises(FrameError, match="exceeds"):
        codec.encode(MessageType.DELTAS, ["n1", 0, [[b"k", noise]]])


def test_an_oversized_length_prefix_is_rejected_without_reading_or_allocating() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(FrameError, match="exceeds"):
            codec.decode(LENGTH_PREFIX.pack(2**32 - 1) + bytes(64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


#: msgpack headers announcing 4 GiB (32-bit) or 64 KiB (16-bit) strings, binaries, arrays and maps.
HUGE_HEADERS = {
    "bin32": b"\xc6\xff\xff\xff\xff",
    "str32": b"\xdb\xff\xff\xff\xff",
    "array32": b"\xdd\xff\xff\xff\xff",
    "map32": b"\xdf\xff\xff\xff\xff",
    "bin16": b"\xc5\xff\xff",
    "str16": b"\xda\xff\xff",
    "array16": b"\xdc\xff\xff",
    "map16": b"\xde\xff\xff",
    "ext32": b"\xc9\x00\x00\x00\x10\x01",
}


@pytest.mark.parametrize("header", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "deflated"])
def test_every_length_inside_a_signed_body_is_capped_by_the_body(header: bytes, compressed: bool) -> None:
    """A correctly signed body announcing more than it holds fails before anything that size exists."""
    body = b"\x93\xa2n1\x00\x91\x92\xa1k" + header + bytes(32)  # ["n1", 0, [["k", <huge>]]]
    kind = MessageType.DELTAS | (COMPRESSED if compressed else 0)
    frame = signed_as(kind, zlib.compress(body) if compressed else body)
    tracemalloc.start()
    try:
        with pytest.raises(FrameError):
            parse(*codec.decode(frame))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"decoding allocated {peak} bytes"


def test_a_large_repetitive_body_travels_compressed_and_round_trips() -> None:
    message = Deltas("n1", 0, tuple((b"key%d" % i, b"writer-n1-0123456789abcdef.1" * 3) for i in range(200)))
    frame = frame_of(message)
    assert frame[21] & COMPRESSED
    assert len(frame) < len(msgpack.packb(to_body(message))) / 3
    assert decode_message(frame) == message


def test_a_compressed_body_that_inflates_past_the_frame_cap_is_rejected() -> None:
    bomb = zlib.compress(msgpack.packb(["n1", 0, [[b"k", bytes(4 * CAP)]]]), 9)
    assert len(bomb) < CAP // 4
    signed = bytes((PROTOCOL_VERSION, MessageType.DELTAS | COMPRESSED)) + Keyring([KEY]).primary_id + bomb
    with pytest.raises(FrameError, match="frame cap"):
        codec.decode(resign(b"", signed=signed))


@given(st.binary(max_size=200))
def test_garbage_flagged_as_compressed_raises_frame_error_only(garbage: bytes) -> None:
    signed = bytes((PROTOCOL_VERSION, MessageType.DELTAS | COMPRESSED)) + Keyring([KEY]).primary_id + garbage
    with pytest.raises(FrameError):
        parse(*codec.decode(resign(b"", signed=signed)))


def test_an_authenticated_frame_of_unknown_type_or_version_is_rejected() -> None:
    signed = frame_of(EVERY_MESSAGE[0])[20:]
    with pytest.raises(FrameError, match="unknown message type"):
        codec.decode(resign(b"", signed=signed[:1] + b"\x63" + signed[2:]))
    with pytest.raises(FrameError, match="version"):
        codec.decode(resign(b"", signed=b"\x09" + signed[1:]))
    with pytest.raises(FrameError, match="trailing"):
        codec.decode(resign(b"", signed=signed + b"\x00"))


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        [1, 2, 3, 4],
        [1, ["n1", "h", 1, 0, 0], "n2", "not a list"],
        [-1, ["n1", "h", 1, 0, 0], "n2", []],
        [True, ["n1", "h", 1, 0, 0], "n2", []],
        [1, ["n1", "h", 0, 0, 0], "n2", []],
        [1, ["n1", "h", 70000, 0, 0], "n2", []],
        [1, ["n1", "h", 1, 0, 7], "n2", []],
        [1, ["", "h", 1, 0, 0], "n2", []],
        [1, ["n1" * 200, "h", 1, 0, 0], "n2", []],
    ],
)
def test_an_authenticated_ping_of_the_wrong_shape_is_rejected(body: Any) -> None:
    with pytest.raises(FrameError):
        parse(*codec.decode(codec.encode(MessageType.PING, body)))


# -- fuzz ------------------------------------------------------------------------------------------


def only_frame_errors(frame: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(frame)


def signed_as(kind: int, body: bytes) -> bytes:
    """A correctly signed frame of type ``kind`` around arbitrary ``body`` bytes."""
    return resign(b"", signed=bytes((PROTOCOL_VERSION, kind)) + Keyring([KEY]).primary_id + body)


@given(st.binary(max_size=512))
def test_garbage_bytes_raise_frame_error_only(garbage: bytes) -> None:
    only_frame_errors(garbage)
    # With a plausible length prefix, so the fuzz reaches the MAC check.
    only_frame_errors(LENGTH_PREFIX.pack(len(garbage)) + garbage)


@given(st.binary(max_size=512))
def test_garbage_bodies_even_correctly_signed_raise_frame_error_only(body: bytes) -> None:
    for kind in MessageType:
        only_frame_errors(
            resign(b"", signed=bytes((PROTOCOL_VERSION, kind)) + Keyring([KEY]).primary_id + body)
        )


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=20,
)


@given(st.sampled_from(list(MessageType)), msgpack_values)
def test_any_msgpack_body_parses_or_raises_frame_error_only(kind: MessageType, body: Any) -> None:
    packed = msgpack.packb(body, use_bin_type=True)
    only_frame_errors(
        resign(b"", signed=bytes((PROTOCOL_VERSION, kind)) + Keyring([KEY]).primary_id + packed)
    )


def replace_somewhere(body: Any, data: st.DataObject) -> Any:
    """``body`` with one node, at a random depth, replaced by an arbitrary msgpack value."""
    if not isinstance(body, list) or not body or data.draw(st.booleans()):
        return data.draw(msgpack_values)
    index = data.draw(st.integers(0, len(body) - 1))
    return [*body[:index], replace_somewhere(body[index], data), *body[index + 1 :]]


@given(st.sampled_from(EVERY_MESSAGE), st.data())
def test_a_valid_body_with_one_part_replaced_parses_or_raises_frame_error_only(
    message: Message, data: st.DataObject
) -> None:
    body = replace_somewhere(to_body(message), data)
    try:
        parse(message.kind, body)
    except FrameError as exc:
        # An explicit shape check caught it, not the catch-all that wraps a surprise exception.
        assert exc.__cause__ is None, f"unchecked shape: {exc.__cause__!r}"


@given(st.sampled_from(EVERY_MESSAGE), st.data())
def test_mutating_a_valid_frame_raises_frame_error_only(message: Message, data: st.DataObject) -> None:
    frame = bytearray(frame_of(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] = data.draw(st.integers(0, 255))
    only_frame_errors(bytes(frame))
