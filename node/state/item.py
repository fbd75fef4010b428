"""One item's replicated state, its key and their bytes: what gossip moves for the node.

An item is ``(content_type, content_id)``. Its state is the ORSet of the users who like it (the count
is its size) and any named PN-counters. The same ``Item`` type serves as a delta: a like's delta is an
item holding only the ORSet delta, so deltas of one item join into one batch, and states and deltas
share one encoding:

    payload = VERSION byte, msgpack [encode(likers), [[name, encode(counter)], ...], [unliked user, ...]]

with counter names and unliked users strictly ascending. The delta of one local like, what the log
holds for nearly every write and gossip ships for every item liked once in a delta interval (most
items, under load), has a shorter form that costs a fraction of the general one to make and to read:

    payload = LIKE_VERSION byte, msgpack [writer, counter, user]

It decodes to the same ``Item`` the general form of that delta does. The CRDT parts come from ``crdt.encode``,
which is deterministic, so equal items give equal bytes and a digest over the payload compares items
across nodes. ``unliked`` is not state: an unlike delta names the users it removed, for members of
earlier versions, which update their "my likes" index from it rather than compare a large liker set
before and after (a dot belongs to one element everywhere, so the users a delta can remove are exactly
those its sender removed); this version learns them from the join (``node.state.store``). States
carry none.

Keys: ``len(type) byte, type (ASCII), id as 8 bytes big-endian``: compact, unambiguous, and sorting
keys sorts items by type length, type, then id.
"""

from __future__ import annotations

import asyncio
import functools
import re
from itertools import pairwise
from typing import Any, NamedTuple, TypeVar

import msgpack

from crdt import CodecError, ORSet, PNCounter, decode, encode, smallset
from crdt.codec import decode_small, encode_small
from crdt.dots import MAX_COUNTER, actor_index, make_dot, valid_actor_name
from node.errors import ItemCodecError

#: ``content_type`` and counter names: a lowercase letter, then up to 19 of ``[a-z0-9_]``. Every other
#: check of a name (the like lane, the OpenAPI document, cursors) is built from this one pattern.
NAME_PATTERN = "[a-z][a-z0-9_]{0,19}"
NAME = re.compile(NAME_PATTERN)
#: An item as one string, ``type:id`` (cursors, the live stream's query): the id as plain decimal,
#: loose in length so a too-large id gets its own error rather than "malformed".
ITEM_REF = re.compile(rf"({NAME_PATTERN}):([0-9]{{1,32}})")
MAX_ID = (1 << 64) - 1
VERSION = 1
VERSION_PREFIX = bytes((VERSION,))
#: First byte of the one-like payload (``encode_like``).
LIKE_VERSION = 2
LIKE_PREFIX = bytes((LIKE_VERSION,))
#: The item store's form of an item one like by one writer makes, most items of a long tail: this
#: byte, then msgpack ``[writer, top, user, counter]`` (its context the writer's ``1..top``, the like
#: under ``(writer, counter)``). Only the item store holds it; encoding and reading it costs a
#: third of the general form, which a start and a flush would otherwise pay a million times.
ONE_LIKE_VERSION = 3
ONE_LIKE_PREFIX = bytes((ONE_LIKE_VERSION,))
#: Cap on the counters one payload may carry, so a hostile payload cannot balloon an item.
MAX_COUNTERS_IN_PAYLOAD = 10_000
#: Cap on the unliked users a delta names; a delta past it names none (a reader of the names then
#: compares sets).
MAX_UNLIKED_HINTS = 100_000
#: Likers above which ``encode_item_aside`` encodes in a worker thread (see there).
ASIDE_LIKES = 20_000

_T = TypeVar("_T")
#: The types of the three parts of a payload.
_PARTS = (bytes, list, list)


class ItemKey(NamedTuple):
    """Which item: its content type and content id."""

    content_type: str
    content_id: int

    def to_bytes(self) -> bytes:
        """The compact key gossip carries."""
        return _key_bytes(self.content_type, self.content_id)

    @classmethod
    def from_bytes(cls, key: bytes) -> ItemKey:
        """Parse a key made by ``to_bytes``; ItemCodecError if it is not one."""
        if not key or len(key) != 1 + key[0] + 8:
            raise ItemCodecError("item key: wrong length")
        try:
            content_type = key[1 : 1 + key[0]].decode("ascii")
        except UnicodeDecodeError as exc:
            raise ItemCodecError("item key: content type is not ASCII") from exc
        if not NAME.fullmatch(content_type):
            raise ItemCodecError("item key: bad content type")
        return cls(content_type, int.from_bytes(key[-8:], "big"))

    def __str__(self) -> str:
        return f"{self.content_type}:{self.content_id}"


@functools.lru_cache(maxsize=4096)
def _key_bytes(content_type: str, content_id: int) -> bytes:
    """``ItemKey.to_bytes``, remembered for the items in use: a like needs its key's bytes several
    times (store, log record, causal token) and a hot item is liked thousands of times a second."""
    name = content_type.encode("ascii")
    return bytes((len(name),)) + name + content_id.to_bytes(8, "big")


class Item:
    """The likers and named counters of one item (or a delta of them)."""

    __slots__ = ("counters", "likers", "unliked")

    def __init__(
        self,
        likers: ORSet | None = None,
        counters: dict[str, PNCounter] | None = None,
        unliked: set[int] | None = None,
    ) -> None:
        self.likers = ORSet() if likers is None else likers
        self.counters: dict[str, PNCounter] = {} if counters is None else counters
        #: Deltas only: the users this delta unliked (see the module docstring).
        self.unliked: set[int] = set() if unliked is None else unliked

    def merge(self, other: Item) -> None:
        """Join ``other`` (a state or a delta) into this item, in place."""
        self.likers.merge(other.likers)
        self.unliked |= other.unliked
        for name, counter in other.counters.items():
            mine = self.counters.get(name)
            if mine is None:
                self.counters[name] = counter.copy()
            else:
                mine.merge(counter)

    def copy(self) -> Item:
        """An independent copy (the liker set's columns are copied as bytes, not element by element)."""
        counters = {name: counter.copy() for name, counter in self.counters.items()}
        return Item(self.likers.copy(), counters, set(self.unliked))

    def counter_values(self) -> dict[str, int]:
        """Each counter's current value, by name."""
        return {name: counter.value() for name, counter in sorted(self.counters.items())}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return (
            self.likers == other.likers and self.counters == other.counters and self.unliked == other.unliked
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Item(likes={len(self.likers)}, counters={self.counter_values()})"


def encode_item(item: Item) -> bytes:
    """The canonical payload of an item or delta."""
    counters = [[name, encode(item.counters[name])] for name in sorted(item.counters)]
    body: bytes = msgpack.packb([encode(item.likers), counters, sorted(item.unliked)], use_bin_type=True)
    return bytes((VERSION,)) + body


def encode_small_item(packed: bytes) -> bytes:
    """``encode_item`` of the item of likers ``packed`` (``crdt.smallset``) and no counters."""
    body: bytes = msgpack.packb([encode_small(packed), [], []], use_bin_type=True)
    return bytes((VERSION,)) + body


async def encode_item_aside(item: Item) -> bytes:
    """``encode_item``, in a worker thread from a copy when the item has more than ``ASIDE_LIKES``
    likers. Encoding a hot post's state takes long enough that on the event loop it would hold up
    every request meanwhile; beside it, the loop waits for the GIL at most a switch interval at a
    time. The copy is cheap: the columns of a big set are copied as bytes."""
    if len(item.likers) <= ASIDE_LIKES:
        return encode_item(item)
    return await asyncio.to_thread(encode_item, item.copy())


def encode_like(writer: str, counter: int, user: int) -> bytes:
    """The payload of the delta of one like: ``user`` added under the dot ``(writer, counter)``."""
    body: bytes = _pack_like((writer, counter, user))
    return LIKE_PREFIX + body


#: One packer for every like (``packb`` builds one per call). Likes are made on the event loop only.
_pack_like = msgpack.Packer().pack


def decode_item(payload: bytes, *, max_bytes: int) -> Item:
    """Parse a payload from a peer; ItemCodecError for anything but a valid item."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ItemCodecError(f"item payload: expected bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise ItemCodecError(f"item payload: {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    if len(payload) >= 2 and payload[0] == LIKE_VERSION:
        return Item(likers=ORSet.of_dots((decode_like(payload),)))
    if len(payload) < 2 or payload[0] != VERSION:
        raise ItemCodecError("item payload: truncated or of an unsupported version")
    try:
        wire: Any = msgpack.unpackb(
            payload[1:],
            raw=False,
            max_ext_len=0,
            max_map_len=0,
            max_array_len=max(2 * MAX_COUNTERS_IN_PAYLOAD, MAX_UNLIKED_HINTS),
        )
    except Exception as exc:  # the trust boundary: msgpack raises several unrelated types
        raise ItemCodecError(f"item payload: not msgpack: {exc}") from exc
    if type(wire) is not list or [type(part) for part in wire] != list(_PARTS):
        raise ItemCodecError("item payload: expected [likers, counters, unliked]")
    likers = _decode_as(wire[0], ORSet, "likers")
    counters: dict[str, PNCounter] = {}
    previous = ""
    for entry in wire[1]:
        well_formed = type(entry) is list and len(entry) == 2
        if not well_formed or type(entry[0]) is not str or type(entry[1]) is not bytes:
            raise ItemCodecError("item payload: a counter must be [name, bytes]")
        name = entry[0]
        if not NAME.fullmatch(name) or name <= previous:
            raise ItemCodecError("item payload: counter names must be valid and strictly ascending")
        counters[name] = _decode_as(entry[1], PNCounter, f"counter {name}")
        previous = name
    unliked: list[Any] = wire[2]
    if len(unliked) > MAX_UNLIKED_HINTS or not all(
        type(user) is int and 0 <= user <= MAX_ID for user in unliked
    ):
        raise ItemCodecError("item payload: unliked users must be unsigned 64-bit integers")
    if any(a >= b for a, b in pairwise(unliked)):
        raise ItemCodecError("item payload: unliked users must be strictly ascending")
    return Item(likers, counters, set(unliked))


def decode_small_item(payload: bytes, *, max_bytes: int) -> bytes | None:
    """The likers, packed (``crdt.smallset``), of the item ``decode_item(payload)`` gives, when it is a
    state of a small item with no counters in canonical form; None for anything else, which
    ``decode_item`` then reads or rejects. What a restart reads for most items, at a third of the cost."""
    if len(payload) > max_bytes or payload[:1] != VERSION_PREFIX:
        return None
    try:
        wire: Any = msgpack.unpackb(payload[1:], raw=False, max_ext_len=0, max_map_len=0, max_array_len=3)
    except Exception:  # the trust boundary: ``decode_item`` reports it
        return None
    if type(wire) is not list or len(wire) != 3 or type(wire[0]) is not bytes or wire[1:] != [[], []]:
        return None
    return decode_small(wire[0])


def encode_stored(packed: bytes) -> bytes:
    """The item store's form of the small item ``packed``: ``ONE_LIKE_PREFIX`` when one like by one
    writer makes it, else ``encode_small_item``."""
    one = smallset.one_like(packed)
    if one is None:
        return encode_small_item(packed)
    body: bytes = msgpack.packb(one, use_bin_type=True)
    return ONE_LIKE_PREFIX + body


def decode_stored_one_like(payload: bytes) -> bytes | None:
    """The packed set of an ``ONE_LIKE_PREFIX`` payload; None if it is not a valid one."""
    if payload[:1] != ONE_LIKE_PREFIX or len(payload) > 128:
        return None
    try:
        wire: Any = msgpack.unpackb(payload[1:], raw=False, max_bin_len=0, max_ext_len=0, max_map_len=0)
    except Exception:  # the trust boundary: a damaged row is reported by the caller
        return None
    if type(wire) is not list or len(wire) != 4:
        return None
    return smallset.from_one_like(*wire)


def decode_like(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """The ``(user, dot)`` of a one-like payload; ItemCodecError if it is not one."""
    if len(payload) < 2 or payload[0] != LIKE_VERSION:
        raise ItemCodecError("like payload: truncated or not a like")
    try:
        wire: Any = msgpack.unpackb(payload[1:], raw=False, max_bin_len=0, max_ext_len=0, max_map_len=0)
    except Exception as exc:  # the trust boundary: msgpack raises several unrelated types
        raise ItemCodecError(f"like payload: not msgpack: {exc}") from exc
    if type(wire) is not list or len(wire) != 3:
        raise ItemCodecError("like payload: expected [writer, counter, user]")
    writer, counter, user = wire
    if not valid_actor_name(writer):
        raise ItemCodecError("like payload: the writer must be a string of 1 to 64 characters")
    if type(counter) is not int or not 0 < counter <= MAX_COUNTER:
        raise ItemCodecError("like payload: the counter must be an integer in 1..2**44-1")
    if type(user) is not int or not 0 <= user <= MAX_ID:
        raise ItemCodecError("like payload: the user must be an unsigned 64-bit integer")
    try:
        return user, make_dot(actor_index(writer), counter)
    except ValueError as exc:  # the process's actor table is full
        raise ItemCodecError(f"like payload: {exc}") from exc


def _decode_as(data: bytes, kind: type[_T], what: str) -> _T:
    try:
        value = decode(data)
    except CodecError as exc:
        raise ItemCodecError(f"item payload: {what}: {exc}") from exc
    if not isinstance(value, kind):
        raise ItemCodecError(f"item payload: {what}: expected {kind.__name__}, got {type(value).__name__}")
    return value
