"""The node's in-memory state: every item, its joins, and the news of what changed.

``LikeStore`` is what the API writes to and what gossip replicates (it implements gossip's
``Replica``). It keeps the items and joins local writes and peers' deltas into them; every change
is published (``node.state.changes``) to the modules that follow the items: the checkpoint's dirty
set (``dirty``), anti-entropy's changed set and digests (``digests``) and the per-user index
(``user_index``); this node's own deltas go to the gossip outbox (``outbox``), and each local write's
journal entry to the log (``drain_journal``).

Items at rest: a small item (a few likers, no counters; most of a catalogue) is held packed, one
``bytes`` value (``crdt.smallset``), a bigger one as an ``Item``. A like on a packed item and a peer's
like of it are taken without unpacking; any other change unpacks it, and it packs again once small.
Readers get an ``Item`` either way (``item``), never the form it is held in.

Finding what a merge changed without copying a big liker set: the ORSet join reports the elements
it took out and brought in (``ORSet.merge(other, removed, added)``), so neither a delta nor a full
state (anti-entropy) is compared with the set before and after. A delta names the users it
unliked (``Item.unliked``) on the wire all the same, for members of earlier versions that read them.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from crdt import ORSet, PNCounter, smallset
from crdt.dots import ACTOR_BITS, COUNTER_STEP, actor_index, named
from gossip.errors import PayloadError
from node.errors import InvalidValue, ItemCodecError, NotDurable, Unavailable
from node.state.changes import ChangedKeys, ChangeListener
from node.state.digests import ItemDigests
from node.state.dirty import DirtyItems
from node.state.item import (
    LIKE_PREFIX,
    ONE_LIKE_PREFIX,
    Item,
    ItemKey,
    decode_item,
    decode_like,
    decode_small_item,
    decode_stored_one_like,
    encode_item,
    encode_item_aside,
    encode_like,
    encode_small_item,
    encode_stored,
)
from node.state.outbox import GossipOutbox
from node.state.staging import COUNTER, LIKE, UNLIKE, Staged, Write
from node.state.user_index import HOT_ITEM_LIKES, UserIndex

log = logging.getLogger(__name__)

#: Bytes a liker adds to an encoded state (a million-liker state: 14.9 MB), for ``weight``.
STATE_BYTES_PERLIKER = 15
#: Default cap on a payload accepted from a peer (crdt's own cap on an encoded value).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
_Ordered = TypeVar("_Ordered", int, ItemKey)
#: An item at rest: packed (``crdt.smallset``) when small, else an ``Item``.
Held = Item | bytes


@dataclass(slots=True)
class LikeResult:
    """The outcome of a like or unlike: whether it changed anything, and the count after it; for a
    like that changed something, its dot ``(writer, counter)``, which a causal token names (so the
    answer need not look the liker up again). Not frozen: a frozen init costs more, once per like."""

    changed: bool
    count: int
    dot: tuple[str, int] | None = None


class LikeStore:
    """All items of this node; the ``Replica`` gossip replicates."""

    def __init__(
        self,
        writer: str,
        *,
        max_counters_per_item: int = 32,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        hot_item_likes: int = HOT_ITEM_LIKES,
    ) -> None:
        self._writer = writer
        self._actor = actor_index(writer)
        self._max_counters = max_counters_per_item
        self._max_payload = max_payload_bytes
        self._items: dict[bytes, Held] = {}
        #: Those who follow the items' changes, each told of every change.
        self.outbox = GossipOutbox()
        self.dirty = DirtyItems()
        self.digests = ItemDigests(self.item_keys, self.state)
        self.index = UserIndex(self, hot_item_likes)
        self.unflushed = ChangedKeys()
        self._listeners: tuple[ChangeListener, ...] = (self.index, self.dirty, self.digests, self.unflushed)
        #: Those told of a state read from the item store: it is there already, so not ``unflushed``.
        self._stored_listeners: tuple[ChangeListener, ...] = (self.index, self.dirty, self.digests)
        #: While the item store is still being read in, a point read of an item not held yet
        #: (``read_through``), so a request or a delta for it sees its stored state first.
        self._stored: Callable[[bytes], bytes | None] | None = None
        #: Encoded local deltas not yet taken for the write-ahead log, one per write, in order.
        self._journal: list[tuple[bytes, bytes]] = []
        #: Local writes staged and not yet applied, per item (see "local writes" below), and in order.
        self._staged: dict[bytes, Staged] = {}
        self._writes: list[Write] = []
        self._seq = 0
        self._stage_writes = False
        self._refusal: str | None = None

    @property
    def writer(self) -> str:
        """The actor id this store tags its mutations with."""
        return self._writer

    def __len__(self) -> int:
        return len(self._items)

    @property
    def likes(self) -> int:
        """Likes held, over every item (the sum of their counts): kept with the reverse index, so
        ``likes status`` can compare nodes by it without a scan (the hot items are few)."""
        return self.index.likes

    def item(self, raw: bytes) -> Item:
        """The item under ``raw`` (an empty one if unknown). Read it, never change it."""
        held = self._get(raw)
        if held is None:
            return Item()
        return Item(smallset.unpack(held)) if isinstance(held, bytes) else held

    def count_of(self, raw: bytes) -> int:
        """How many users like the item under ``raw``."""
        held = self._get(raw)
        if held is None:
            return 0
        return smallset.size(held) if isinstance(held, bytes) else len(held.likers)

    def likers_of(self, raw: bytes) -> Collection[int]:
        """The users who like the item under ``raw``."""
        held = self._get(raw)
        if held is None:
            return ()
        return smallset.elements(held) if isinstance(held, bytes) else held.likers

    def item_keys(self) -> list[bytes]:
        """The key of every item held."""
        return list(self._items)

    # -- reading the item store in while serving ----------------------------------------------------

    def read_through(self, stored: Callable[[bytes], bytes | None] | None) -> None:
        """Until called with None, read an item not held yet from ``stored`` (the item store's point
        read) before anything reads or changes it: the rest of the store is being read in."""
        self._stored = stored

    def _get(self, raw: bytes) -> Held | None:
        """The item under ``raw`` as held, read from the item store first if it is still being read in."""
        held = self._items.get(raw)
        if held is None and self._stored is not None:
            state = self._stored(raw)
            if state is not None:
                self.restore_stored(((raw, state),))
                held = self._items.get(raw)
        return held

    def restore_stored(self, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        """``restore`` states read from the item store: already there, so not ``unflushed``."""
        listeners, self._listeners = self._listeners, self._stored_listeners
        try:
            return self._restore(pairs, stored=True)
        finally:
            self._listeners = listeners

    # -- local writes ------------------------------------------------------------------------------
    #
    # A local write is staged, then applied: staging decides it against the state and the writes
    # still staged (so a batch sees its own earlier ops, and two writes in flight on one item get two
    # dots), mints its dot and journals its delta for the log; applying joins it into the state, from
    # where reads, gossip, checkpoints, snapshots and anti-entropy see it. A store without a log applies
    # each write at once; a node's store (``stage_writes``) applies them once the log made them
    # durable, and drops them unapplied if the log failed: a refused write changes nothing.

    @property
    def stage_writes(self) -> bool:
        """Whether writes wait for ``apply`` (a node's store) or apply at once (a store alone)."""
        return self._stage_writes

    @stage_writes.setter
    def stage_writes(self, staged: bool) -> None:
        if self._writes:
            raise RuntimeError("writes are staged: apply or discard them first")
        self._stage_writes = staged

    def refuse_writes(self, reason: str | None) -> None:
        """Refuse every write with ``NotDurable(reason)`` until called again with None."""
        self._refusal = reason

    @property
    def refusal(self) -> str | None:
        """Why writes are refused (``refuse_writes``), or None."""
        return self._refusal

    @property
    def writable(self) -> bool:
        """Whether writes are taken (``refuse_writes``)."""
        return self._refusal is None

    def set_writer(self, writer: str) -> None:
        """Write under ``writer`` from now on (a node whose log failed takes writes again under a new
        writer id, so no dot of a refused write is ever minted again). Nothing may be staged."""
        if self._staged:
            raise RuntimeError("writes are staged: apply or discard them first")
        self._actor = actor_index(writer)
        self._writer = writer

    def like(self, key: ItemKey, user: int) -> LikeResult:
        """``user`` likes the item; liking twice changes nothing and makes no delta."""
        self._check_writable()
        changed, count, dot = self._stage(key.to_bytes(), user, True)
        if not changed:
            return LikeResult(False, count)
        self._apply_now()
        return LikeResult(True, count, (self._writer, dot >> ACTOR_BITS))

    def unlike(self, key: ItemKey, user: int) -> LikeResult:
        """``user`` no longer likes the item; unliking what is not liked changes nothing."""
        self._check_writable()
        changed, count, _ = self._stage(key.to_bytes(), user, False)
        if changed:
            self._apply_now()
        return LikeResult(changed, count)

    def apply_likes(
        self,
        keys: Sequence[bytes],
        users: Sequence[int],
        liking: Sequence[bool],
        *,
        dots_from: int | None = None,
    ) -> tuple[list[bool], list[int], list[tuple[tuple[str, int], ...]]]:
        """Op ``i`` likes (``liking[i]``) or unlikes, for ``users[i]``, the item under ``keys[i]``
        (``ItemKey.to_bytes``), in order: the same writes and answers as ``like`` and ``unlike`` called
        one at a time: whether each op changed anything, and the count after it.

        With ``dots_from``, each op from that index on also reports ``like_dots`` (after a like,
        before an unlike): what a causal token names (``node.http.causal.apply_batch``).
        """
        self._check_writable()
        start = len(keys) if dots_from is None else max(0, min(dots_from, len(keys)))
        changed: list[bool] = []
        counts: list[int] = []
        dots: list[tuple[tuple[str, int], ...]] = []
        stage, change, count = self._stage, changed.append, counts.append
        try:
            for i, (raw, user, like) in enumerate(zip(keys, users, liking, strict=True)):
                if i >= start and not like:
                    dots.append(self._named(self._dots_of(raw, user)))
                made, after, _ = stage(raw, user, like)
                change(made)
                count(after)
                if i >= start and like:
                    dots.append(self._named(self._dots_of(raw, user)))
        finally:  # even after an unexpected error: what was staged is applied or committed whole
            self._apply_now()
        return changed, counts, dots

    def add_to_counter(self, key: ItemKey, name: str, amount: int) -> int:
        """Add ``amount`` (negative to subtract) to the item's counter ``name``; return its value."""
        raw = key.to_bytes()
        held = self._get(raw)
        item = None if held is None else self.item(raw)
        staged = self._staged.get(raw)
        shadow = None if staged is None or staged.counters is None else staged.counters.get(name)
        if shadow is None:
            counter = None if item is None else item.counters.get(name)
            if amount == 0:
                return 0 if counter is None else counter.value()
            if counter is None:
                names = set() if item is None else set(item.counters)
                if staged is not None and staged.counters is not None:
                    names.update(staged.counters)
                if len(names) >= self._max_counters:
                    raise InvalidValue(f"item {key} already has {self._max_counters} counters")
            self._check_writable()
            staged = staged or self._new_staged(raw, held)
            if staged.counters is None:
                staged.counters = {}
            shadow = staged.counters[name] = PNCounter() if counter is None else counter.copy()
        elif amount == 0:
            return shadow.value()
        else:
            self._check_writable()
        assert staged is not None
        if amount > 0:
            delta = shadow.increment(self._writer, amount)
        else:
            delta = shadow.decrement(self._writer, -amount)
        write = Item(counters={name: delta})
        encoded = encode_item(write)
        self._journal.append((raw, encoded))
        self._seq += 1
        staged.ops += 1
        self._writes.append((COUNTER, raw, 0, 0, write, encoded, name, self._seq))
        value = shadow.value()
        self._apply_now()
        return value

    def _check_writable(self) -> None:
        if self._refusal is not None:
            raise NotDurable(self._refusal)

    def _stage(self, raw: bytes, user: int, liking: bool) -> tuple[bool, int, int]:
        """Stage a like or an unlike of ``user``: whether it changes anything, the count once it (and
        every write staged before it) is applied, and a like's new dot (0 otherwise)."""
        held = self._get(raw)
        staged = self._staged.get(raw)
        mine = None if staged is None else staged.users.get(user)
        if mine is not None:
            present = bool(mine[1])
        elif held is None:
            present = False
        elif isinstance(held, bytes):
            present = smallset.contains(held, user)
        else:
            present = user in held.likers
        count = self.count_of(raw) if held is not None else 0
        if staged is not None:
            count += staged.net
        if liking == present:
            return False, count, 0
        if staged is None:
            staged = self._new_staged(raw, held)
        self._seq += 1
        staged.ops += 1
        if liking:
            dot = staged.last = staged.last + COUNTER_STEP
            staged.users[user] = (self._seq, (dot,))
            staged.net += 1
            self._journal.append((raw, encode_like(self._writer, dot >> ACTOR_BITS, user)))
            self._writes.append((LIKE, raw, user, dot, None, b"", "", self._seq))
            return True, count + 1, dot
        dots = mine[1] if mine is not None else _held_dots(held, user)
        write = Item(likers=ORSet.of_removal(dots), unliked={user})
        encoded = encode_item(write)
        staged.users[user] = (self._seq, ())
        staged.net -= 1
        self._journal.append((raw, encoded))
        self._writes.append((UNLIKE, raw, user, 0, write, encoded, "", self._seq))
        return True, count - 1, 0

    def _new_staged(self, raw: bytes, held: Held | None) -> Staged:
        """The staging of an item with no write in flight: its next dot follows what the item holds."""
        if held is None:
            last = self._actor
        elif isinstance(held, bytes):
            last = smallset.next_dot(held, self._actor) - COUNTER_STEP
        else:
            last = held.likers.next_dot(self._writer) - COUNTER_STEP
        staged = self._staged[raw] = Staged(last)
        return staged

    def _apply_now(self) -> None:
        """Apply what was just staged, unless a log decides when (``stage_writes``)."""
        if not self._stage_writes and self._writes:
            writes, self._writes = self._writes, []
            self.apply(writes)

    def drain_writes(self) -> list[Write]:
        """The writes staged since the last call, for ``apply`` once their log record is durable (the
        same writes, in the same order, as the journal entries ``drain_journal`` returns)."""
        writes, self._writes = self._writes, []
        return writes

    def apply(self, writes: Sequence[Write]) -> None:
        """Join staged writes into the state, in order: from now on they are read, gossiped,
        checkpointed and snapshotted."""
        added: dict[bytes, list[tuple[int, int]]] = {}
        staged_items = self._staged
        for kind, raw, user, dot, delta, encoded, name, seq in writes:
            if kind == LIKE:
                self._insert(raw, user, dot)
                mine = added.get(raw)
                if mine is None:
                    added[raw] = [(user, dot)]
                else:
                    mine.append((user, dot))
            elif kind == UNLIKE:
                assert delta is not None
                mine = added.pop(raw, None)
                if mine is not None:  # likes applied just before: publish them before the unlike
                    self._settle_likes(raw, mine)
                item = self._unpacked(raw)
                added_users, removed_users = self._merge_likers(item.likers, delta)
                self._repack(raw, item)
                self.outbox.add_delta(raw, delta, encoded)
                self._changed(raw, added_users, removed_users)
            else:
                assert delta is not None
                item = self._unpacked(raw)
                counter = item.counters.get(name)
                if counter is None:
                    item.counters[name] = delta.counters[name].copy()
                else:
                    counter.merge(delta.counters[name])
                self.outbox.add_delta(raw, delta, encoded)
                self._changed(raw, (), ())
            staged = staged_items.get(raw)
            if staged is None:  # dropped by ``discard_staged``: nothing to settle
                continue
            staged.ops -= 1
            if not staged.ops:  # the item's last write in flight (the common case): drop it whole
                del staged_items[raw]
            elif kind != COUNTER:
                mine_staged = staged.users.get(user)
                if mine_staged is not None and mine_staged[0] == seq:
                    del staged.users[user]
                staged.net += -1 if kind == LIKE else 1
        for raw, likes in added.items():
            self._settle_likes(raw, likes)

    def discard_staged(self) -> int:
        """Forget every staged write unapplied (their log record failed); how many items had some."""
        dropped = len(self._staged)
        self._staged.clear()
        self._writes.clear()
        self._journal.clear()
        return dropped

    @property
    def staged_items(self) -> int:
        """Items with writes staged and not yet applied."""
        return len(self._staged)

    def _settle_likes(self, raw: bytes, added: list[tuple[int, int]]) -> None:
        """Publish applied likes, all of ``added`` (user, dot) at once, and hand them to gossip."""
        self.outbox.add_likes(raw, added)
        self._changed(raw, [user for user, _ in added], ())

    def _dots_of(self, raw: bytes, user: int) -> tuple[int, ...]:
        """The dots that make ``user`` like the item once every staged write is applied (packed)."""
        staged = self._staged.get(raw)
        if staged is not None:
            mine = staged.users.get(user)
            if mine is not None:
                return mine[1]
        return _held_dots(self._get(raw), user)

    @staticmethod
    def _named(dots: tuple[int, ...]) -> tuple[tuple[str, int], ...]:
        return tuple(map(named, dots))

    # -- reads -------------------------------------------------------------------------------------

    def liked(self, key: ItemKey, user: int) -> bool:
        """Whether ``user`` likes the item."""
        held = self._get(key.to_bytes())
        if isinstance(held, bytes):
            return smallset.contains(held, user)
        return held is not None and user in held.likers

    def like_dots(self, key: ItemKey, user: int) -> tuple[tuple[str, int], ...]:
        """The ``(writer, counter)`` dots that make ``user`` like the item here once the writes staged
        are applied (empty if not liked): what a causal token names (``node.http.causal``)."""
        return self._named(self._dots_of(key.to_bytes(), user))

    def observed(self, raw: bytes, user: int, writer: str, counter: int, *, removed: bool) -> bool:
        """Whether the item under ``raw`` has seen the dot ``(writer, counter)`` (``removed``: and seen
        it removed from ``user``). Read-only; monotone, so a causal wait can poll it."""
        if self._get(raw) is None:
            return False
        item = self.item(raw)
        if removed:
            return item.likers.has_removed(user, writer, counter)
        return item.likers.has_seen(writer, counter)

    def count(self, key: ItemKey) -> int:
        """How many users like the item."""
        return self.count_of(key.to_bytes())

    def counters(self, key: ItemKey) -> dict[str, int]:
        """The item's named counters and their values."""
        held = self._get(key.to_bytes())
        return held.counter_values() if isinstance(held, Item) else {}

    def likers(self, key: ItemKey, *, after: int | None, limit: int) -> tuple[list[int], bool]:
        """Up to ``limit`` likers above ``after``, ascending, and whether more follow."""
        likers = self.likers_of(key.to_bytes())
        users: Iterable[int] = likers if after is None else (u for u in likers if u > after)
        return _page(users, limit)

    def liked_items(self, user: int, *, after: ItemKey | None, limit: int) -> tuple[list[ItemKey], bool]:
        """Up to ``limit`` items ``user`` likes above ``after``, in (type, id) order; and if more follow."""
        keys = (ItemKey.from_bytes(raw) for raw in self.index.liked_by(user))
        return _page(keys if after is None else (k for k in keys if k > after), limit)

    def fingerprint(self) -> str:
        """A digest of the whole store, independent of insertion order: equal stores, equal prints."""
        return self.digests.fingerprint()

    async def fingerprint_aside(self) -> str:
        """``fingerprint``, without holding the event loop up for long (``ItemDigests``)."""
        return await self.digests.fingerprint_aside()

    def drain_journal(self) -> list[tuple[bytes, bytes]]:
        """The (key, delta payload) of every local write since the last call, for the log.

        A request drains right after its writes, with no await in between, so what it gets is
        exactly its own writes.
        """
        journal, self._journal = self._journal, []
        return journal

    def drain_dirty(self) -> dict[bytes, list[int]]:
        """The items changed since the last call (writes and merges alike), each with the users whose
        like changed in it (empty when only counters did): what the checkpointer must write."""
        return self.dirty.drain()

    @property
    def dirty_since(self) -> float | None:
        """When (``time.monotonic()``) the oldest change not yet taken by ``drain_dirty`` was
        applied; None when there is none."""
        return self.dirty.since

    def restore(self, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        """Join states and deltas read back from disk; how many were unreadable (and skipped).

        Joins commute, so the one-like deltas that fill most of a log are gathered per item and
        joined as one delta each, instead of a million joins of one like.
        """
        if self._stored is not None:  # what the item store holds of these items comes first
            pairs = list(pairs)
            for key, _ in pairs:
                self._get(bytes(key))
        return self._restore(pairs)

    def _restore(self, pairs: Iterable[tuple[bytes, bytes]], *, stored: bool = False) -> int:
        """``restore``; ``stored``: the pairs come from the item store, which may use its own form of
        a one-like item (``ONE_LIKE_PREFIX``), one whose keys were checked as they went in."""
        damaged = 0
        likes: dict[bytes, list[tuple[int, int]]] = {}
        items = self._items
        for key, payload in pairs:
            try:
                if stored and payload[:1] == ONE_LIKE_PREFIX:
                    packed = decode_stored_one_like(payload)
                    if packed is None:
                        raise ItemCodecError("a stored one-like item that is not one")
                    held = items.get(key)
                    if held is None:
                        self._hold_new(key, packed)
                    else:  # read through already, or changed since: join
                        self._join(key, Item(likers=smallset.unpack(packed)))
                elif payload[:1] == LIKE_PREFIX:
                    ItemKey.from_bytes(key)
                    likes.setdefault(bytes(key), []).append(decode_like(payload))
                else:
                    self._merge(key, payload)
            except (PayloadError, ItemCodecError):
                damaged += 1
        for raw, added in likes.items():
            self._join(raw, Item(likers=ORSet.of_dots(added)))
        return damaged

    # -- the gossip Replica --------------------------------------------------------------------------

    def drain_deltas(self) -> list[tuple[bytes, bytes]]:
        """The local deltas since the last call, one joined delta per item."""
        return self.outbox.drain()

    def discard_deltas(self) -> int:
        """Forget the local deltas since the last call unencoded (a node alone); how many items."""
        return self.outbox.discard()

    def drain_changed(self) -> Iterable[bytes]:
        """The keys changed since the last call; the first call returns every key."""
        return self.digests.drain_changed()

    def digest(self, key: bytes) -> bytes:
        """blake2b of the item's canonical encoding, cached until the item changes."""
        return self.digests.digest(key)

    def state(self, key: bytes) -> bytes | None:
        """The item's full payload, or None if this node has never heard of it."""
        held = self._get(key)
        if held is None:
            return None
        return encode_small_item(held) if isinstance(held, bytes) else encode_item(held)

    def weight(self, key: bytes) -> int:
        """About the bytes of the item's state, without encoding it: 15 B a liker, as encoded."""
        held = self._get(key)
        if not isinstance(held, Item):
            return STATE_BYTES_PERLIKER * self.count_of(key)
        return STATE_BYTES_PERLIKER * len(held.likers) + 64 * len(held.counters)

    async def stored_state(self, key: bytes) -> bytes | None:
        """``state_aside`` as the item store keeps it: a one-like item in its own, cheaper form
        (``encode_stored``)."""
        held = self._get(key)
        if held is None:
            return None
        return encode_stored(held) if isinstance(held, bytes) else await encode_item_aside(held)

    async def state_aside(self, key: bytes) -> bytes | None:
        """``state``, a big item's encoded off the event loop (``encode_item_aside``)."""
        held = self._get(key)
        if not isinstance(held, Item):
            return self.state(key)
        return await encode_item_aside(held)

    def merge(self, key: bytes, payload: bytes) -> None:
        """Join a peer's delta or state into the item; PayloadError (and no change) if invalid."""
        raw = key if type(key) is bytes else bytes(key)
        if self._stored is not None:
            try:
                self._get(raw)
            except Unavailable as exc:  # a damaged stored state: this delta waits for a repair
                raise PayloadError(str(exc)) from exc
        self._merge(raw, payload)

    def _merge(self, key: bytes, payload: bytes) -> None:
        raw = key if type(key) is bytes else bytes(key)
        try:
            if raw not in self._items:  # a key held here was checked before
                ItemKey.from_bytes(raw)
                packed = decode_small_item(payload, max_bytes=self._max_payload)
                if packed is not None:  # a small item new here: its state is the item (a restart)
                    self._hold_new(raw, packed)
                    return
            incoming = decode_item(payload, max_bytes=self._max_payload)
        except ItemCodecError as exc:
            raise PayloadError(str(exc)) from exc
        self._join(raw, incoming)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _join(self, raw: bytes, incoming: Item) -> None:
        """Join a valid delta or state into the item and publish the change."""
        held = self._items.get(raw)
        if not incoming.counters and not isinstance(held, Item):
            # A small item, or none yet: a peer's like, or a small state, joins it without unpacking.
            one = incoming.likers.single_add()
            if one is not None:
                user, dot = one
                was_liked = held is not None and smallset.contains(held, user)
                packed = smallset.insert(held or smallset.EMPTY, user, dot)
                if packed is not None:
                    self._items[raw] = packed
                    self._changed(raw, (user,) if packed is not held and not was_liked else (), ())
                    return
            elif held is None:
                packed = smallset.pack(incoming.likers)
                if packed is not None:
                    self._hold_new(raw, packed)
                    return
        item = self._unpacked(raw)
        added, removed = self._merge_likers(item.likers, incoming)
        for name, counter in incoming.counters.items():
            mine = item.counters.get(name)
            if mine is None:
                item.counters[name] = counter
            else:
                mine.merge(counter)
        self._repack(raw, item)
        self._changed(raw, added, removed)

    def _hold_new(self, raw: bytes, packed: bytes) -> None:
        """Hold an item new here as the small set ``packed``, and publish its likers as added."""
        self._items[raw] = packed
        self._changed(raw, smallset.elements(packed), ())

    def _insert(self, raw: bytes, user: int, dot: int) -> None:
        """``ORSet.insert`` into the item, a small one kept packed while it stays small."""
        held = self._items.get(raw)
        if not isinstance(held, Item):
            packed = smallset.insert(held or smallset.EMPTY, user, dot)
            if packed is not None:
                self._items[raw] = packed
                return
        self._unpacked(raw).likers.insert(user, dot)

    def _unpacked(self, raw: bytes) -> Item:
        """The item under ``raw`` as an ``Item`` held here (a new one if unknown), to change in place;
        ``_repack`` packs it again once the change is made, if it is small."""
        held = self._items.get(raw)
        if isinstance(held, Item):
            return held
        item = self._items[raw] = Item(ORSet() if held is None else smallset.unpack(held))
        return item

    def _repack(self, raw: bytes, item: Item) -> None:
        """Hold ``item`` packed if it is small."""
        if not item.counters:
            packed = smallset.pack(item.likers)
            if packed is not None:
                self._items[raw] = packed

    @staticmethod
    def _merge_likers(likers: ORSet, incoming: Item) -> tuple[list[int], list[int]]:
        """Join ``incoming``'s likers into ``likers``; the users it brought in and took out, as the
        join reports them."""
        removed: list[int] = []
        added: list[int] = []
        likers.merge(incoming.likers, removed, added)
        return added, removed

    def _changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        """Publish a change of the item to every listener."""
        for listener in self._listeners:
            listener.changed(raw, added, removed)


def _held_dots(held: Held | None, user: int) -> tuple[int, ...]:
    """The dots that make ``user`` like the item ``held`` (packed, empty if not liked)."""
    if held is None:
        return ()
    if isinstance(held, bytes):
        dot = smallset.dot_of(held, user)
        return () if dot is None else (dot,)
    return held.likers.held_dots(user)


def _page(candidates: Iterable[_Ordered], limit: int) -> tuple[list[_Ordered], bool]:
    """The ``limit`` smallest candidates, ascending, and whether there were more."""
    smallest = heapq.nsmallest(limit + 1, candidates)
    return smallest[:limit], len(smallest) > limit
