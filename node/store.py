"""The node's in-memory state: every item, the deltas awaiting gossip, and who likes what.

``LikeStore`` is what the API writes to and what gossip replicates (it implements gossip's
``Replica``). Local writes and merges from peers both keep the per-user reverse index ("my likes")
exact, so a user's list never disagrees with the items' liker sets.

Finding what a merge changed without copying a big liker set: only elements of the payload's kernel
can appear, and a payload whose causal context covers no more dots than its kernel holds removes
nothing (the ORSet join only drops a dot the other side has seen but no longer holds). A delta that
does remove names the users it unliked (``Item.unliked``); the count before and after the join proves
the list complete. Only a full state that carries removals (anti-entropy) pays for comparing the set
before and after.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from crdt import ORSet, PNCounter
from crdt.dots import ACTOR_BITS
from gossip.errors import PayloadError
from node.errors import InvalidValue, ItemCodecError
from node.item import (
    LIKE_PREFIX,
    MAX_UNLIKED_HINTS,
    Item,
    ItemKey,
    decode_item,
    decode_like,
    encode_item,
    encode_like,
)

log = logging.getLogger(__name__)

#: Digest width: 128 bits make an accidental collision between two item states negligible.
DIGEST_BYTES = 16
#: Default cap on a payload accepted from a peer (crdt's own cap on an encoded value).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024

_Ordered = TypeVar("_Ordered", int, ItemKey)


@dataclass(frozen=True, slots=True)
class LikeResult:
    """The outcome of a like or unlike: whether it changed anything, and the count after it."""

    changed: bool
    count: int


class LikeStore:
    """All items of this node; the ``Replica`` gossip replicates."""

    def __init__(
        self,
        writer: str,
        *,
        max_counters_per_item: int = 32,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._writer = writer
        self._max_counters = max_counters_per_item
        self._max_payload = max_payload_bytes
        self._items: dict[bytes, Item] = {}
        #: Local likes not yet handed to gossip, as (user, dot) per item: made into one delta per
        #: item only when gossip takes them, far cheaper than a delta object per like.
        self._pending_likes: dict[bytes, list[tuple[int, int]]] = {}
        #: Other local deltas (unlikes, counters) not yet handed to gossip, joined per item.
        self._pending: dict[bytes, Item] = {}
        #: The encoding of a pending delta that is one write's alone (made for the log, reused).
        self._pending_bytes: dict[bytes, bytes] = {}
        #: Pending deltas that unliked more than ``MAX_UNLIKED_HINTS`` users and so name none.
        self._unnamed: set[bytes] = set()
        self._changed: set[bytes] = set()
        #: Items changed since the checkpointer last looked, each with the users whose like changed.
        self._dirty: dict[bytes, set[int]] = {}
        #: Encoded local deltas not yet taken for the write-ahead log, one per write, in order.
        self._journal: list[tuple[bytes, bytes]] = []
        self._drained_once = False
        #: user -> the key of the one item the user likes here, or a set of keys when several. Most
        #: users like one item of a node's share (a hot post: a million of them), and a set costs
        #: 216 bytes where a key shared with ``_keys`` costs a pointer.
        self._liked_by: dict[int, bytes | set[bytes]] = {}
        #: How many (user, item) likes ``_liked_by`` holds: the sum of every item's count.
        self._likes = 0
        #: raw key -> itself: every index entry of an item shares this one bytes object.
        self._keys: dict[bytes, bytes] = {}
        #: Digests computed since the item last changed; every other item is in ``_unfolded``.
        self._digests: dict[bytes, bytes] = {}
        self._unfolded: set[bytes] = set()
        #: XOR of ``_fold(key, digest)`` over the items in ``_digests``: see ``fingerprint``.
        self._fingerprint = 0

    @property
    def writer(self) -> str:
        """The actor id this store tags its mutations with."""
        return self._writer

    def __len__(self) -> int:
        return len(self._items)

    @property
    def likes(self) -> int:
        """Likes held, over every item (the sum of their counts): kept with the reverse index, so
        ``likes status`` can compare nodes by it without a scan."""
        return self._likes

    def item(self, raw: bytes) -> Item:
        """The item under ``raw`` (an empty one if unknown). Read it, never change it."""
        return self._items.get(raw) or Item()

    def item_keys(self) -> list[bytes]:
        """The key of every item held."""
        return list(self._items)

    # -- local writes ------------------------------------------------------------------------------

    def like(self, key: ItemKey, user: int) -> LikeResult:
        """``user`` likes the item; liking twice changes nothing and makes no delta."""
        raw = key.to_bytes()
        item = self._items.get(raw)
        if item is not None and user in item.likers:
            return LikeResult(False, len(item.likers))
        if item is None:
            item = self._new_item(raw)
        dot = item.likers.add_dot(self._writer, user)
        raw = self._index(raw, (user,))
        self._journal.append((raw, encode_like(self._writer, dot >> ACTOR_BITS, user)))
        added = self._pending_likes.get(raw)
        if added is None:
            self._pending_likes[raw] = [(user, dot)]
        else:
            added.append((user, dot))
        self._touch(raw)
        return LikeResult(True, len(item.likers))

    def unlike(self, key: ItemKey, user: int) -> LikeResult:
        """``user`` no longer likes the item; unliking what is not liked changes nothing."""
        raw = key.to_bytes()
        item = self._items.get(raw)
        if item is None or user not in item.likers:
            return LikeResult(False, 0 if item is None else len(item.likers))
        delta = item.likers.remove(user)
        self._unindex(user, raw)
        self._record(raw, Item(likers=delta, unliked={user}))
        return LikeResult(True, len(item.likers))

    def add_to_counter(self, key: ItemKey, name: str, amount: int) -> int:
        """Add ``amount`` (negative to subtract) to the item's counter ``name``; return its value."""
        raw = key.to_bytes()
        item = self._items.get(raw)
        counter = None if item is None else item.counters.get(name)
        if amount == 0:
            return 0 if counter is None else counter.value()
        if counter is None:
            if item is not None and len(item.counters) >= self._max_counters:
                raise InvalidValue(f"item {key} already has {self._max_counters} counters")
            item = item if item is not None else self._new_item(raw)
            counter = item.counters[name] = PNCounter()
        if amount > 0:
            delta = counter.increment(self._writer, amount)
        else:
            delta = counter.decrement(self._writer, -amount)
        self._record(raw, Item(counters={name: delta}))
        return counter.value()

    # -- reads -------------------------------------------------------------------------------------

    def liked(self, key: ItemKey, user: int) -> bool:
        """Whether ``user`` likes the item."""
        item = self._items.get(key.to_bytes())
        return item is not None and user in item.likers

    def like_dots(self, key: ItemKey, user: int) -> tuple[tuple[str, int], ...]:
        """The ``(writer, counter)`` dots that make ``user`` like the item here (empty if not liked):
        what a causal token names (``node.causal``)."""
        item = self._items.get(key.to_bytes())
        return () if item is None else item.likers.dots_of(user)

    def observed(self, raw: bytes, user: int, writer: str, counter: int, *, removed: bool) -> bool:
        """Whether the item under ``raw`` has seen the dot ``(writer, counter)`` (``removed``: and seen
        it removed from ``user``). Read-only; monotone, so a causal wait can poll it."""
        item = self._items.get(raw)
        if item is None:
            return False
        if removed:
            return item.likers.has_removed(user, writer, counter)
        return item.likers.has_seen(writer, counter)

    def count(self, key: ItemKey) -> int:
        """How many users like the item."""
        item = self._items.get(key.to_bytes())
        return 0 if item is None else len(item.likers)

    def counters(self, key: ItemKey) -> dict[str, int]:
        """The item's named counters and their values."""
        item = self._items.get(key.to_bytes())
        return {} if item is None else item.counter_values()

    def likers(self, key: ItemKey, *, after: int | None, limit: int) -> tuple[list[int], bool]:
        """Up to ``limit`` likers above ``after``, ascending, and whether more follow."""
        item = self._items.get(key.to_bytes())
        if item is None:
            return [], False
        users: Iterable[int] = item.likers if after is None else (u for u in item.likers if u > after)
        return _page(users, limit)

    def liked_items(self, user: int, *, after: ItemKey | None, limit: int) -> tuple[list[ItemKey], bool]:
        """Up to ``limit`` items ``user`` likes above ``after``, in (type, id) order; and if more follow."""
        keys = (ItemKey.from_bytes(raw) for raw in _keys_of(self._liked_by.get(user)))
        return _page(keys if after is None else (k for k in keys if k > after), limit)

    def fingerprint(self) -> str:
        """A digest of the whole store, independent of insertion order: equal stores, equal prints.

        Maintained incrementally (each item's digest is folded in once and folded out when the
        item changes), so asking costs only the items changed since the last time.
        """
        for raw in list(self._unfolded):
            self.digest(raw)
        return self._fingerprint.to_bytes(DIGEST_BYTES, "big").hex()

    def drain_journal(self) -> list[tuple[bytes, bytes]]:
        """The (key, delta payload) of every local write since the last call, for the log.

        A request drains right after its writes, with no await in between, so what it gets is
        exactly its own writes.
        """
        journal, self._journal = self._journal, []
        return journal

    def drain_dirty(self) -> dict[bytes, set[int]]:
        """The items changed since the last call (writes and merges alike), each with the users whose
        like changed in it (empty when only counters did): what the checkpointer must write."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    def restore(self, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        """Join states and deltas read back from disk; how many were unreadable (and skipped).

        Joins commute, so the one-like deltas that fill most of a log are gathered per item and
        joined as one delta each, instead of a million joins of one like.
        """
        damaged = 0
        likes: dict[bytes, list[tuple[int, int]]] = {}
        for key, payload in pairs:
            try:
                if payload[:1] == LIKE_PREFIX:
                    ItemKey.from_bytes(key)
                    likes.setdefault(bytes(key), []).append(decode_like(payload))
                else:
                    self.merge(key, payload)
            except (PayloadError, ItemCodecError):
                damaged += 1
        for raw, added in likes.items():
            self._join(raw, Item(likers=ORSet.of_dots(added)))
        return damaged

    # -- the gossip Replica --------------------------------------------------------------------------

    def drain_deltas(self) -> list[tuple[bytes, bytes]]:
        """The local deltas since the last call, one joined delta per item."""
        likes, self._pending_likes = self._pending_likes, {}
        pending, self._pending = self._pending, {}
        encoded, self._pending_bytes = self._pending_bytes, {}
        self._unnamed.clear()
        deltas = []
        for raw, added in likes.items():
            delta = Item(likers=ORSet.of_dots(added))
            other = pending.pop(raw, None)
            if other is not None:
                delta.merge(other)
            deltas.append((raw, encode_item(delta)))
        deltas.extend((raw, encoded.get(raw) or encode_item(delta)) for raw, delta in pending.items())
        return deltas

    def discard_deltas(self) -> int:
        """Forget the local deltas since the last call unencoded (a node alone); how many items."""
        dropped = len(self._pending_likes.keys() | self._pending.keys())
        self._pending_likes, self._pending, self._pending_bytes = {}, {}, {}
        self._unnamed.clear()
        return dropped

    def drain_changed(self) -> Iterable[bytes]:
        """The keys changed since the last call; the first call returns every key."""
        if not self._drained_once:
            self._drained_once = True
            self._changed = set()
            return list(self._items)
        changed, self._changed = self._changed, set()
        return changed

    def digest(self, key: bytes) -> bytes:
        """blake2b of the item's canonical encoding, cached until the item changes."""
        cached = self._digests.get(key)
        if cached is not None:
            return cached
        item = self._items.get(key)
        if item is None:
            return b""
        digest = hashlib.blake2b(encode_item(item), digest_size=DIGEST_BYTES).digest()
        self._digests[key] = digest
        self._unfolded.discard(key)
        self._fingerprint ^= _fold(key, digest)
        return digest

    def state(self, key: bytes) -> bytes | None:
        """The item's full payload, or None if this node has never heard of it."""
        item = self._items.get(key)
        return None if item is None else encode_item(item)

    def merge(self, key: bytes, payload: bytes) -> None:
        """Join a peer's delta or state into the item; PayloadError (and no change) if invalid."""
        try:
            ItemKey.from_bytes(key)
            incoming = decode_item(payload, max_bytes=self._max_payload)
        except ItemCodecError as exc:
            raise PayloadError(str(exc)) from exc
        self._join(bytes(key), incoming)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _join(self, raw: bytes, incoming: Item) -> None:
        """Join a valid delta or state into the item, keeping the reverse index exact."""
        item = self._items.get(raw)
        if item is None:
            item = self._new_item(raw)
        self._merge_likers(raw, item.likers, incoming)
        for name, counter in incoming.counters.items():
            mine = item.counters.get(name)
            if mine is None:
                item.counters[name] = counter
            else:
                mine.merge(counter)
        self._touch(raw)

    def _new_item(self, raw: bytes) -> Item:
        item = self._items[raw] = Item()
        self._unfolded.add(raw)
        return item

    def _record(self, raw: bytes, delta: Item) -> None:
        """Journal a local delta, queue it for gossip and note the change."""
        encoded = encode_item(delta)  # now: ``delta`` may become the pending join of later writes
        self._journal.append((raw, encoded))
        pending = self._pending.get(raw)
        if pending is None:
            pending = self._pending[raw] = delta
            self._pending_bytes[raw] = encoded
        else:
            pending.merge(delta)
            self._pending_bytes.pop(raw, None)
        if raw in self._unnamed or len(pending.unliked) > MAX_UNLIKED_HINTS:
            self._unnamed.add(raw)  # a partial list would be wrong: name nobody
            pending.unliked.clear()
        self._touch(raw)

    def _touch(self, raw: bytes) -> None:
        """The item changed: forget its digest and fold it out of the fingerprint."""
        self._changed.add(raw)
        if raw not in self._dirty:
            self._dirty[raw] = set()
        digest = self._digests.pop(raw, None)
        if digest is not None:
            self._fingerprint ^= _fold(raw, digest)
            self._unfolded.add(raw)

    def _merge_likers(self, raw: bytes, likers: ORSet, incoming: Item) -> None:
        """Join ``incoming``'s likers into ``likers`` and bring the reverse index along."""
        joined = incoming.likers
        if not likers or not _may_remove(joined):
            fresh = [user for user in joined if user not in likers]
            likers.merge(joined)
            self._index(raw, (user for user in fresh if user in likers))
        elif incoming.unliked:
            size = len(likers)
            fresh = [user for user in joined if user not in likers]
            named = [user for user in incoming.unliked if user in likers]
            likers.merge(joined)
            gained = [user for user in fresh if user in likers]
            lost = [user for user in named if user not in likers]
            self._index(raw, gained)
            for user in lost:
                self._unindex(user, raw)
            if size + len(gained) - len(lost) != len(likers):
                log.warning("a delta for %s removed users it did not name; re-indexing", raw.hex())
                self._reindex(raw, likers)
        else:
            before = likers.value()
            likers.merge(joined)
            after = likers.value()
            self._index(raw, after - before)
            for user in before - after:
                self._unindex(user, raw)

    def _index(self, raw: bytes, users: Iterable[int]) -> bytes:
        """``users`` now like the item (every change of a like goes through here or ``_unindex``).
        Returns the item's one shared key object."""
        raw = self._keys.setdefault(raw, raw)
        dirty = self._dirty.setdefault(raw, set())
        liked_by = self._liked_by
        users_before = len(liked_by)
        for user in users:
            keys = liked_by.setdefault(user, raw)
            if keys is not raw:
                if isinstance(keys, set):
                    if raw not in keys:
                        keys.add(raw)
                        self._likes += 1
                elif keys != raw:
                    liked_by[user] = {keys, raw}
                    self._likes += 1
            dirty.add(user)
        self._likes += len(liked_by) - users_before  # users who liked nothing here before
        return raw

    def _reindex(self, raw: bytes, likers: ORSet) -> None:
        """Rebuild the reverse index of one item from its liker set (a full scan; never expected)."""
        for user, keys in list(self._liked_by.items()):
            if raw in _keys_of(keys) and user not in likers:
                self._unindex(user, raw)
        self._index(raw, likers)

    def _unindex(self, user: int, raw: bytes) -> None:
        self._dirty.setdefault(raw, set()).add(user)
        keys = self._liked_by.get(user)
        if isinstance(keys, set):
            if raw in keys:
                keys.remove(raw)
                self._likes -= 1
            if len(keys) == 1:
                (self._liked_by[user],) = keys
        elif keys == raw:
            del self._liked_by[user]
            self._likes -= 1


def _keys_of(entry: bytes | set[bytes] | None) -> Iterable[bytes]:
    """The keys of a reverse-index entry, whichever its form."""
    if entry is None:
        return ()
    return entry if isinstance(entry, set) else (entry,)


def _may_remove(incoming: ORSet) -> bool:
    """Whether joining ``incoming`` can drop elements: its context covers dots its kernel lacks."""
    _names, vv, cloud, singles, multiples = incoming.to_wire()
    seen: int = sum(vv[1::2]) + len(cloud) // 2
    held: int = len(singles) // 3
    i = 0
    while i < len(multiples):
        held += multiples[i + 1]
        i += 2 + 2 * multiples[i + 1]
    return seen > held


def _fold(key: bytes, digest: bytes) -> int:
    """An item's contribution to the store fingerprint (keyed, so equal items under two keys differ)."""
    return int.from_bytes(hashlib.blake2b(key + digest, digest_size=DIGEST_BYTES).digest(), "big")


def _page(candidates: Iterable[_Ordered], limit: int) -> tuple[list[_Ordered], bool]:
    """The ``limit`` smallest candidates, ascending, and whether there were more."""
    smallest = heapq.nsmallest(limit + 1, candidates)
    return smallest[:limit], len(smallest) > limit
