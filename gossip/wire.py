"""Frames on the wire: length prefix, MAC, version, message type, key id, msgpack body.

::

    offset size
    0      4    big-endian length of everything after it
    4      16   tag: HMAC-SHA256(key, bytes[20:]) truncated, see ``gossip.security``
    20     1    protocol version
    21     1    message type (``MessageType``); bit 0x80 set: the body is zlib-compressed
    22     4    id of the signing key
    26     ...  msgpack body (decoded with every length capped by the frame size)

The tag covers version, type, key id and body in one contiguous slice, so verifying a frame copies
nothing. ``FrameCodec.decode`` is the trust boundary: whatever the bytes, it returns an authenticated
(type, body) pair or raises ``FrameError``, never anything else (``FrameAuthError``, a subclass, when
the tag does not verify under any key of the ring). The tag is checked before msgpack sees a byte,
so an outsider cannot reach the decoder at all.

Every length is capped before anything is allocated for it: the length prefix against
``max_frame_bytes`` (an oversized frame is rejected from its first four bytes, unread), inflation
against the same cap, and every msgpack string, binary, array and map length against the body's own
size, since no container can hold more items than the body has bytes.

Bodies over ``COMPRESS_OVER`` bytes are deflated (level 1) when that makes them smaller: a batch of
deltas repeats writer ids and structure in every entry, so this roughly halves delta bytes per like.
Inflating is bounded by the frame cap, so a small frame cannot expand into a large allocation.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import Any, TypeVar

import msgpack

from gossip.errors import FrameAuthError, FrameError
from gossip.security import KEY_ID_BYTES, TAG_BYTES, Keyring

#: The protocol version written into every frame.
PROTOCOL_VERSION = 1
#: The oldest protocol version this build still reads.
MIN_PROTOCOL_VERSION = 1

LENGTH_PREFIX = struct.Struct(">I")
_TAG_AT = LENGTH_PREFIX.size
_SIGNED_AT = _TAG_AT + TAG_BYTES
_KEY_ID_AT = _SIGNED_AT + 2
_BODY_AT = _KEY_ID_AT + KEY_ID_BYTES
#: Set in the message-type byte when the body is zlib-compressed.
COMPRESSED = 0x80
#: Bodies larger than this are compressed when that saves bytes; small ones are not worth the CPU.
COMPRESS_OVER = 1024
#: Bytes of a frame before its body, length prefix included.
FRAME_OVERHEAD = _BODY_AT
#: Bytes held back from ``max_frame_bytes`` when batching, for the envelope around the items.
BATCH_RESERVE = 4096

T = TypeVar("T")


class MessageType(IntEnum):
    """Every message of the protocol; never reuse a retired number."""

    PING = 1  # SWIM direct probe
    PING_REQ = 2  # SWIM indirect probe request
    ACK = 3  # SWIM probe answer (direct or forwarded)
    MEMBERS = 4  # full membership push (and pull when a reply is asked for)
    DELTAS = 5  # a batch of (key, delta)
    TREE = 6  # anti-entropy: Merkle node hashes at one level
    KEYS = 7  # anti-entropy: (key, item hash) lists of differing leaves
    STATES = 8  # anti-entropy: full states, and the keys wanted back
    REPLICATE = 9  # deltas whose receipt the sender waits for (write levels above 1)
    REPLICATED = 10  # the receipt of a REPLICATE


def payload_length(prefix: bytes, max_frame_bytes: int) -> int:
    """The length announced by a 4-byte prefix; FrameError when no valid frame is that long."""
    if len(prefix) != LENGTH_PREFIX.size:
        raise FrameError("truncated length prefix")
    (length,) = LENGTH_PREFIX.unpack(prefix)
    if length + LENGTH_PREFIX.size > max_frame_bytes:
        raise FrameError(f"frame of {length + LENGTH_PREFIX.size} bytes exceeds {max_frame_bytes}")
    if length < _BODY_AT - LENGTH_PREFIX.size + 1:
        raise FrameError(f"frame of {length + LENGTH_PREFIX.size} bytes is too short")
    return int(length)


class FrameCodec:
    """Signs and encodes outgoing frames; authenticates and decodes incoming ones."""

    __slots__ = ("_keyring", "max_frame_bytes")

    def __init__(self, keyring: Keyring, max_frame_bytes: int) -> None:
        self._keyring = keyring
        self.max_frame_bytes = max_frame_bytes

    @property
    def keyring(self) -> Keyring:
        """The keyring frames are signed and verified with; mutate it to rotate keys at runtime."""
        return self._keyring

    def encode(self, kind: MessageType, body: object) -> bytes:
        """The signed frame carrying ``body``; FrameError if it would exceed the frame cap."""
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        flags = 0
        if len(packed) > COMPRESS_OVER:
            deflated = zlib.compress(packed, 1)
            if len(deflated) < len(packed):
                packed, flags = deflated, COMPRESSED
        size = FRAME_OVERHEAD + len(packed)
        if size > self.max_frame_bytes:
            raise FrameError(f"{kind.name} frame of {size} bytes exceeds {self.max_frame_bytes}")
        keys = self._keyring.current()  # one snapshot: the id on the wire names the key that signed
        signed = bytes((PROTOCOL_VERSION, kind | flags)) + keys.primary_id + packed
        return LENGTH_PREFIX.pack(size - LENGTH_PREFIX.size) + keys.sign(signed) + signed

    def decode(self, frame: bytes) -> tuple[MessageType, Any]:
        """The authenticated (type, body) of ``frame``; FrameError for anything else."""
        try:
            return self._decode(frame)
        except FrameError:
            raise
        except Exception as exc:  # the trust boundary: no other exception may escape
            raise FrameError(f"undecodable frame: {type(exc).__name__}") from exc

    def _decode(self, frame: bytes) -> tuple[MessageType, Any]:
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise FrameError(f"a frame is bytes, not {type(frame).__name__}")
        view = memoryview(frame).cast("B")
        length = payload_length(bytes(view[:_TAG_AT]), self.max_frame_bytes)
        if length != len(view) - LENGTH_PREFIX.size:
            raise FrameError(f"length prefix says {length} bytes, frame has {len(view) - _TAG_AT}")
        tag = bytes(view[_TAG_AT:_SIGNED_AT])
        ident = bytes(view[_KEY_ID_AT:_BODY_AT])
        if not self._keyring.current().verify(ident, view[_SIGNED_AT:], tag):
            raise FrameAuthError(f"frame failed authentication (key {ident.hex()} unknown or bad tag)")
        version, kind = view[_SIGNED_AT], view[_SIGNED_AT + 1]
        if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            raise FrameError(f"unsupported protocol version {version}")
        try:
            message_type = MessageType(kind & ~COMPRESSED)
        except ValueError:
            raise FrameError(f"unknown message type {kind}") from None
        body: bytes | memoryview = view[_BODY_AT:]
        if kind & COMPRESSED:
            inflater = zlib.decompressobj()
            try:
                body = inflater.decompress(body, self.max_frame_bytes)
            except zlib.error as exc:
                raise FrameError(f"compressed body does not inflate: {exc}") from None
            if inflater.unconsumed_tail or not inflater.eof:
                raise FrameError("compressed body is truncated or inflates past the frame cap")
        cap = max(len(body), 1)  # no container can hold more items than the body has bytes
        unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=cap,
            max_str_len=cap,
            max_bin_len=cap,
            max_array_len=cap,
            max_map_len=cap,
            max_ext_len=0,
        )
        unpacker.feed(body)
        value = unpacker.unpack()
        if unpacker.tell() != len(body):
            raise FrameError(f"{len(body) - unpacker.tell()} bytes of trailing data after the body")
        return message_type, value


def bytes_cost(*parts: bytes) -> int:
    """Upper bound of the msgpack size of a small array of bin values."""
    return 1 + sum(5 + len(part) for part in parts)


def batches(items: Iterable[T], cost: Callable[[T], int], budget: int) -> Iterator[list[T]]:
    """Split ``items`` in order into lists whose summed cost stays under ``budget``.

    An item costlier than the budget on its own still comes out, alone: the encoder then refuses it
    and the caller counts it, rather than it silently vanishing here.
    """
    batch: list[T] = []
    used = 0
    for item in items:
        size = cost(item)
        if batch and used + size > budget:
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += size
    if batch:
        yield batch
