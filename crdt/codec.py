"""Versioned, deterministic bytes for every CRDT: ``version byte, type tag byte, msgpack body``.

One tag list (like riak_dt's ``riak_dt_tags.hrl``) and one version in front of every encoding. The
body is the type's own wire form (``ReplicatedData.to_wire``, deterministic: sets and maps sorted),
so equal states encode to equal bytes and digests can be computed over encodings. ``decode`` is a
trust boundary: whatever the bytes, it returns a valid object or raises ``CodecError``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgpack

from crdt import smallset
from crdt.errors import CodecError
from crdt.gcounter import GCounter
from crdt.orset import ORSet
from crdt.orset_wire import PACK_CHUNK
from crdt.pncounter import PNCounter
from crdt.protocol import ReplicatedData

VERSION = 1
#: Default cap on an encoded value: a 1,000,000-user ORSet takes about 15 MB.
MAX_ENCODED_BYTES = 64 * 1024 * 1024

#: Every type the codec frames, each a ``ReplicatedData``.
CRDT = GCounter | PNCounter | ORSet


class Tag(IntEnum):
    """The type tags; never reuse a retired number."""

    GCOUNTER = 1
    PNCOUNTER = 2
    ORSET = 3


_TYPE_OF: dict[int, type[CRDT]] = {Tag.GCOUNTER: GCounter, Tag.PNCOUNTER: PNCounter, Tag.ORSET: ORSet}
_TAG_OF: dict[type[ReplicatedData[Any]], Tag] = {kind: Tag(tag) for tag, kind in _TYPE_OF.items()}


def encode(value: CRDT) -> bytes:
    """The canonical bytes of ``value``."""
    tag = _TAG_OF.get(type(value))
    if tag is None:
        raise TypeError(f"cannot encode {type(value).__name__}")
    if type(value) is ORSet and len(value) > PACK_CHUNK:  # a big set: the same bytes, chunk by chunk
        body = value.packed_wire()
    else:
        body = msgpack.packb(value.to_wire(), use_bin_type=True)
    return bytes((VERSION, tag)) + body


def encode_small(packed: bytes) -> bytes:
    """``encode`` of the ``ORSet`` packed in ``packed`` (``crdt.smallset``), the same bytes."""
    body: bytes = msgpack.packb(smallset.to_wire(packed), use_bin_type=True)
    return bytes((VERSION, Tag.ORSET)) + body


def decode_small(data: bytes) -> bytes | None:
    """The packed set (``crdt.smallset``) ``decode(data)`` would give, when ``data`` is the canonical
    encoding of a small ``ORSet``; None for anything else, which ``decode`` then reads or rejects."""
    if len(data) < 3 or data[0] != VERSION or data[1] != Tag.ORSET or len(data) > MAX_ENCODED_BYTES:
        return None
    try:
        wire: Any = msgpack.unpackb(
            data[2:], raw=False, strict_map_key=True, max_ext_len=0, max_bin_len=0, max_map_len=0
        )
    except Exception:  # the trust boundary: ``decode`` reports it
        return None
    return smallset.from_wire(wire)


def decode(data: bytes, *, max_bytes: int = MAX_ENCODED_BYTES) -> CRDT:
    """The value encoded in ``data``; CodecError for anything corrupt, truncated or unsupported."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CodecError(f"encoded value of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if len(data) < 3:
        raise CodecError("truncated: no header")
    version, tag = data[0], data[1]
    if version != VERSION:
        raise CodecError(f"unsupported encoding version {version}")
    kind = _TYPE_OF.get(tag)
    if kind is None:
        raise CodecError(f"unknown type tag {tag}")
    try:
        wire: Any = msgpack.unpackb(
            data[2:],
            raw=False,
            strict_map_key=True,
            max_ext_len=0,
            max_bin_len=0,
            max_map_len=0,
        )
        return kind.from_wire(wire)
    except CodecError:
        raise
    except Exception as exc:  # the trust boundary: msgpack and validation errors of any kind
        raise CodecError(f"corrupt {kind.__name__} encoding: {exc}") from exc
