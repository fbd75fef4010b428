"""The checkpointer: copies dirty items from the store to every configured sink, in the background.

Every ``checkpoint.interval_ms`` it takes the store's dirty items (each with the users whose like
changed; ``LikeStore.drain_dirty``) and hands them to one **lane** per sink, so an outage of one sink
never holds up another. A lane keeps what it has not written yet, joined per item, and writes it in
batches of ``batch_items``. A failed write keeps the batch pending and backs off (doubling up to
``max_backoff_ms``); likes never wait for a sink. Lag (pending items, age of the oldest, errors) is
reported at ``GET /v1/cluster``.

Lag is what an operator waits on before ``likes restore``, so it must never read 0 early: a sink's
lag is the age of the oldest change this node holds, for an item it owns, that the sink cannot give
back yet, counted from when the change reached the store (``LikeStore.dirty_since``: before the like
was answered), not from when a round took it. A status read takes the store's dirty items itself (a
round takes them from there), so they count as pending, by owner, before any round. For the sinks
``likes restore`` reads (``RESTORE_SINKS``) a change is done only once a state of its item holding
it is written; for the others, once their rows hold it. A takeover not yet run after a member left
(``TAKEOVER_DELAY``) counts from when it began: the changes this node holds for the items it gains
were left to their old owner, so until it runs nothing says the sinks have them. (A start needs no
such count: every item the log restores is dirty.)

Ownership: each item is written by one owner, chosen by rendezvous hashing over the live members (the
highest ``hash(member, item)`` wins), and another member takes over when the owner dies, so the
cluster writes each change once, not once per node. A member that gains items (at start, or when a
member dies or joins) writes them in full (``full=True``): it cannot know what the previous owner
managed to write. It does so only ``TAKEOVER_DELAY`` seconds after the start or the change, on the
view it then has: a full write cancels the users the writer does not hold, so a writer still behind
its peers (just started and catching up, or briefly sure a busy owner was dead while that owner kept
writing) would cancel likes it has not received yet. Until then it writes the changes it sees, which
is always safe; a change of membership that is undone within the delay rewrites nothing.

Redis and MySQL are shared, so they hold every item; each node's embedded SQLite file holds the items
that node owns (together, the files hold the whole cluster's state).

Liked-at times are the time the checkpointer first sees a like (the CRDT keeps no clocks); sinks keep
the first one they were given. Item states (for disaster recovery) go with every write of an item to
Redis and MySQL, except that an item with more than ``LARGE_ITEM_LIKES`` likers has its state written
at most every ``LARGE_STATE_INTERVAL`` seconds (a hot post's state is megabytes; its like_records rows
are written every time); its lane then writes the deferred state once the interval is over, even if
the item changes no more, and until then counts the item pending in a sink ``likes restore`` reads.
SQLite gets the state of an item of more than ``SMALL_STATE_LIKES`` likers at most every
``SQLITE_STATE_INTERVAL`` (a smaller one's with its rows, every time): the file lives in the node's
data directory, next to the log that already holds every state, so its states only spare a restore
from the log, and encoding one at every write would cost a sizeable share of each like's CPU.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Collection, ItemsView, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from node.checkpoint.sink import CheckpointSink, ItemCheckpoint
from node.errors import SinkUnavailable
from node.state.item import Item, ItemKey, encode_item_aside
from node.state.store import LikeStore

log = logging.getLogger(__name__)

#: Items with more likers than this have their serialized state written less often.
LARGE_ITEM_LIKES = 10_000
#: Seconds between state writes of a large item.
LARGE_STATE_INTERVAL = 30.0
#: Seconds between state writes of any item to the embedded SQLite file (see the module docstring).
SQLITE_STATE_INTERVAL = 60.0
#: Items with at most this many likers have their state written with their rows, whatever the
#: interval: their states are a few hundred bytes, quick to encode, and nothing is remembered of them
#: (a long tail of millions of items written once would otherwise keep a timestamp each).
SMALL_STATE_LIKES = 100
#: The sinks ``likes restore`` reads item states from (``node.checkpoint.restore``): a change is pending there
#: until a state holding it is written, not merely its rows.
RESTORE_SINKS = frozenset({"mysql"})

#: Seconds a node waits after a start or a membership change before it rewrites in full the items it
#: gained (see the module docstring).
TAKEOVER_DELAY = 5.0
#: Seconds of checkpoint building between yields to the event loop (requests wait meanwhile).
BUILD_SLICE = 0.002

#: The names of the live members (this node included), for ownership.
LiveMembers = Callable[[], Iterable[str]]


def owner(key: bytes, members: Iterable[str]) -> str | None:
    """The member that writes ``key``: rendezvous (highest random weight) hashing."""
    best: tuple[bytes, str] | None = None
    for name in members:
        weight = hashlib.blake2b(key, key=name.encode()[:64], digest_size=8).digest()
        if best is None or (weight, name) > best:
            best = (weight, name)
    return None if best is None else best[1]


@dataclass(slots=True)
class _Pending:
    """What a lane still has to write for one item: the users whose like changed (a list, as the
    store's dirty set keeps them: possibly repeated), or all of them when ``full``."""

    users: list[int] = field(default_factory=list)
    full: bool = False
    #: When the oldest change it holds reached the store (monotonic seconds; inf before the first).
    since: float = math.inf


@dataclass
class LaneStatus:
    """What ``GET /v1/cluster`` shows of one sink."""

    pending_items: int
    lag_ms: int
    written_items: int
    errors: int
    down: bool
    last_error: str | None


class Lane:
    """One sink, its pending items and its backoff."""

    def __init__(self, sink: CheckpointSink, *, batch_items: int, max_backoff: float) -> None:
        self.sink = sink
        #: Least seconds between two state writes of an item (0: with every write).
        self._state_interval = SQLITE_STATE_INTERVAL if sink.name == "sqlite" else 0.0
        #: When each item's state was last written (monotonic seconds), for the intervals above, oldest
        #: first: an entry older than every interval says what no entry says, so it is dropped
        #: (``_forget_old_writes``) and the table holds the last minute's items, not every item.
        self._state_written: OrderedDict[bytes, float] = OrderedDict()
        self._batch_items = batch_items
        self._max_backoff = max_backoff
        self._pending: dict[bytes, _Pending] = {}
        #: No later than the oldest ``since`` in ``_pending`` (exact after each write), None when empty.
        self._oldest: float | None = None
        #: Whether a change is done only once a state holding it is written (``RESTORE_SINKS``).
        self._restores = sink.name in RESTORE_SINKS
        #: Items whose rows are written but whose state (deferred: a large item) lacks changes, with
        #: the ``since`` of the oldest: still pending here until their state is written.
        self._unstated: dict[bytes, float] = {}
        self._retry_at = 0.0
        self._backoff = 0.0
        #: When the current outage began (monotonic seconds; None while the sink works) and how many
        #: writes it has failed so far: one log line when it begins, one when it ends.
        self._down_since: float | None = None
        self._outage_failures = 0
        self._opened = False
        self.written_items = 0
        self.errors = 0
        self.last_error: str | None = None

    def absorb(self, dirty: Mapping[bytes, Collection[int]], *, since: float, full: bool = False) -> None:
        """Add changed items (and their changed users) to what this lane must write; ``since``: when
        the oldest of these changes reached the store."""
        if not dirty:
            return
        self._oldest = since if self._oldest is None else min(self._oldest, since)
        for raw, users in dirty.items():
            pending = self._pending.get(raw)
            if pending is None:
                pending = self._pending[raw] = _Pending(since=self._unstated.pop(raw, math.inf))
            pending.since = min(pending.since, since)
            pending.users.extend(users)
            pending.full = pending.full or full

    def forget(self, keep: Callable[[bytes], bool]) -> None:
        """Drop pending items this lane no longer writes (owned by another member)."""
        gone = [raw for raw in self._pending if not keep(raw)]
        for raw in gone:
            del self._pending[raw]
        for raw in [raw for raw in self._unstated if not keep(raw)]:
            del self._unstated[raw]
        if gone:
            self._oldest = _oldest(self._pending)

    def due(self, now: float) -> bool:
        return (bool(self._pending) or any(map(self._state_due, self._unstated))) and now >= self._retry_at

    def _state_due(self, raw: bytes) -> bool:
        """Whether the deferred state of ``raw`` may be written now (``LARGE_STATE_INTERVAL``)."""
        return time.monotonic() >= self._state_written.get(raw, -math.inf) + LARGE_STATE_INTERVAL

    def _unstated_due(self) -> None:
        """Make pending again the items whose deferred state may be written now: left alone, the
        state of a large item that stops changing would stay behind its rows for good."""
        due = [raw for raw in self._unstated if self._state_due(raw)]
        for raw in due:
            self.absorb({raw: set()}, since=self._unstated.pop(raw))

    async def flush(self, store: LikeStore, now_ms: int, encoded: dict[bytes, bytes]) -> None:
        """Write everything pending, batch by batch; on failure keep the rest and back off."""
        self._unstated_due()
        wrote = False
        try:
            if not self._opened:
                await self.sink.open()
                self._opened = True
            while self._pending:
                taken = dict(islice(self._pending.items(), self._batch_items))  # not a copy of all
                batch = await self._checkpoints(store, taken, now_ms, encoded)
                await self.sink.write(batch)
                for (raw, pending), checkpoint in zip(taken.items(), batch, strict=True):
                    if self._pending.get(raw) is pending:
                        del self._pending[raw]
                    if not self._restores:
                        continue
                    if checkpoint.state is None:  # rows written, state deferred: not restorable yet
                        self._unstated[raw] = min(pending.since, self._unstated.get(raw, pending.since))
                    else:
                        self._unstated.pop(raw, None)
                self.written_items += len(batch)
                wrote = True
        except SinkUnavailable as exc:
            if wrote:
                self._oldest = _oldest(self._pending)
            self.errors += 1
            if self._down_since is None:  # the first failure of an outage: its retries are not news
                self._down_since = time.monotonic()
                self._outage_failures = 0
                log.warning(
                    "checkpoint sink %s down, retrying with backoff: %s",
                    self.sink.name,
                    exc,
                    extra={"event": "sink_down", "sink": self.sink.name, "error": str(exc)},
                )
            self._outage_failures += 1
            self.last_error = str(exc)
            self._backoff = min(self._max_backoff, max(0.1, 2 * self._backoff))
            self._retry_at = time.monotonic() + self._backoff
            return
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            log.info(
                "checkpoint sink %s back after %.1f s down (%d failed attempts)",
                self.sink.name,
                down,
                self._outage_failures,
                extra={
                    "event": "sink_up",
                    "sink": self.sink.name,
                    "down_s": round(down, 3),
                    "failed_attempts": self._outage_failures,
                },
            )
        self._backoff = 0.0
        self._oldest = _oldest(self._pending)

    async def _checkpoints(
        self, store: LikeStore, taken: dict[bytes, _Pending], now_ms: int, encoded: dict[bytes, bytes]
    ) -> list[ItemCheckpoint]:
        """The checkpoints of ``taken``, built in slices of ``BUILD_SLICE`` seconds: encoding hundreds
        of item states at once would stall every request for tens of milliseconds."""
        batch: list[ItemCheckpoint] = []
        deadline = time.monotonic() + BUILD_SLICE
        for raw, pending in taken.items():
            item = store.item(raw)
            state = await self._state(raw, item, pending.full, encoded)
            batch.append(_checkpoint(raw, item, pending, now_ms, state))
            if time.monotonic() >= deadline:
                await asyncio.sleep(0)
                deadline = time.monotonic() + BUILD_SLICE
        return batch

    async def _state(self, raw: bytes, item: Item, full: bool, encoded: dict[bytes, bytes]) -> bytes | None:
        """The item's serialized state if this lane is due to write it (None leaves the stored one).
        A large item's state encoded for one lane this round is reused by the others (``encoded``):
        it is megabytes."""
        likes = len(item.likers)
        interval = 0.0 if likes <= SMALL_STATE_LIKES else self._state_interval
        interval = max(interval, LARGE_STATE_INTERVAL if likes > LARGE_ITEM_LIKES else 0.0)
        now = time.monotonic()
        written = self._state_written.get(raw)
        if interval and not full and written is not None and now - written < interval:
            return None
        state = encoded.get(raw)
        if state is None:
            state = await encode_item_aside(item)  # a hot post's in a thread: long enough to stall the loop
            if likes > LARGE_ITEM_LIKES:
                encoded[raw] = state
        if interval:
            self._state_written[raw] = now
            self._state_written.move_to_end(raw)
            self._forget_old_writes(now)
        return state

    def _forget_old_writes(self, now: float) -> None:
        """Drop the state writes older than the longest interval (see ``_state_written``)."""
        written, horizon = self._state_written, now - max(SQLITE_STATE_INTERVAL, LARGE_STATE_INTERVAL)
        while written and next(iter(written.values())) <= horizon:
            written.popitem(last=False)

    def status(self, unseen: Iterable[bytes] = (), unseen_since: float | None = None) -> LaneStatus:
        """This lane's figures, counting also ``unseen``: changed items this lane has not taken yet
        (the store's, owned by this node), the oldest of whose changes reached the store at
        ``unseen_since`` (which may also stand for a takeover not yet run)."""
        pending, unstated = self._pending, self._unstated  # disjoint
        new = sum(1 for raw in unseen if raw not in pending and raw not in unstated)
        count = len(pending) + len(unstated) + new
        oldest = min(
            (t for t in (self._oldest, unseen_since, *self._unstated.values()) if t is not None),
            default=None,
        )
        # Rounded up: a change not yet restorable never reads as 0 ms.
        lag = 0 if oldest is None else max(1, math.ceil((time.monotonic() - oldest) * 1000))
        return LaneStatus(
            pending_items=count,
            lag_ms=lag,
            written_items=self.written_items,
            errors=self.errors,
            down=self._backoff > 0,
            last_error=self.last_error,
        )


def _oldest(pending: Mapping[bytes, _Pending]) -> float | None:
    """When the oldest change in ``pending`` reached the store; None when nothing is pending."""
    return min((p.since for p in pending.values()), default=None)


def _checkpoint(
    raw: bytes, item: Item, pending: _Pending, now_ms: int, state: bytes | None
) -> ItemCheckpoint:
    """The item as it is now, for the users pending (or all of them when ``full``)."""
    likers = item.likers
    users = set(pending.users)
    liked: Mapping[int, int]
    if pending.full:
        liked = LikedAt(likers, now_ms)
        unliked: list[int] = [user for user in users if user not in likers]
    else:
        liked = {user: now_ms for user in users if user in likers}
        unliked = [user for user in users if user not in likers]
    return ItemCheckpoint(
        key=ItemKey.from_bytes(raw),
        count=len(likers),
        liked=liked,
        unliked=unliked,
        counters=item.counter_values(),
        state=state,
        full=pending.full,
    )


class LikedAt(Mapping[int, int]):
    """Every liker of an item, each liked at ``at``: a full checkpoint's ``liked`` without a dict.

    A full rewrite of a hot post hands every sink all of its likers at once, so they are a sorted
    ``array('Q')``: 8 bytes a liker and no object per liker, where ``dict.fromkeys(likers)`` takes
    about 42 (42 MB for a million-liker post, for every sink); lookups bisect it. A snapshot, not a
    view of the live set: a sink writes it over awaits (or in its own thread) while likes go on.
    """

    __slots__ = ("_at", "_users")

    def __init__(self, users: Iterable[int], at: int) -> None:
        self._users = array("Q", sorted(users))
        self._at = at

    def __getitem__(self, user: int) -> int:
        if user in self:
            return self._at
        raise KeyError(user)

    def __contains__(self, user: object) -> bool:
        if type(user) is not int or not 0 <= user < 1 << 64:
            return False
        users = self._users
        i = bisect.bisect_left(users, user)
        return i < len(users) and users[i] == user

    def __iter__(self) -> Iterator[int]:
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def items(self) -> ItemsView[int, int]:
        return _LikedAtItems(self)


class _LikedAtItems(ItemsView[int, int]):
    """``LikedAt.items()``: ascending (user, at) pairs, without a lookup per user."""

    _mapping: LikedAt

    def __iter__(self) -> Iterator[tuple[int, int]]:
        at = self._mapping._at
        return ((user, at) for user in self._mapping._users)


class Checkpointer:
    """Runs the lanes of every configured sink over one store."""

    def __init__(
        self,
        store: LikeStore,
        sinks: Sequence[CheckpointSink],
        *,
        me: str,
        live_members: LiveMembers,
        interval: float,
        batch_items: int,
        max_backoff: float,
        takeover_delay: float = TAKEOVER_DELAY,
    ) -> None:
        self._store = store
        self._me = me
        self._live_members = live_members
        self._interval = interval
        self.lanes = [Lane(sink, batch_items=batch_items, max_backoff=max_backoff) for sink in sinks]
        self._members: frozenset[str] = frozenset()
        self._takeover_delay = takeover_delay
        #: A pending full rewrite: when it is due, and the members before the change (None: start).
        self._takeover: tuple[float, frozenset[str] | None] | None = None
        #: The store's dirty items taken but not yet handed to the lanes (a status read takes them, to
        #: count them by owner), and when the oldest of their changes reached the store.
        self._taken: dict[bytes, list[int]] = {}
        self._taken_since: float | None = None
        #: When the store's dirty items were last taken: any change taken later was made after it.
        self._drained = time.monotonic()
        #: When a member first left the view since the last takeover ran (None: none left): the changes
        #: this node holds for the items it gains from it count from then.
        self._member_left: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        """Start the loop (inside the event loop)."""
        self._task = asyncio.create_task(self._run(), name="checkpointer")

    async def close(self) -> None:
        """Write what is pending once more (bounded by the sinks' timeouts), then close the sinks."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._started:
            await self.tick(force=True)
        for lane in self.lanes:
            with contextlib.suppress(SinkUnavailable):
                await lane.sink.close()

    def status(self) -> dict[str, LaneStatus]:
        """Each sink's figures (``Lane.status``), counting also the changes no round has taken yet
        (the store's dirty items this node owns) and a takeover not yet run: a lag of 0 means every
        change this node holds for the items it owns is in the sink (see the module docstring)."""
        self._take_dirty()
        mine = self._owned_by_me(self._members) if self._members else None  # before any round: all
        unseen = [raw for raw in self._taken if mine is None or mine(raw)]
        since = self._taken_since if unseen else None
        began = self._takeover_began()
        if began is not None:
            since = began if since is None else min(since, began)
        return {lane.sink.name: lane.status(unseen, since) for lane in self.lanes}

    def _take_dirty(self) -> None:
        """Take the store's dirty items into ``_taken``, with when the oldest change reached the store."""
        since = self._store.dirty_since
        dirty = self._store.drain_dirty()
        if since is None:  # the store always names it while dirty; should it not, this bound holds
            since = self._drained
        self._drained = time.monotonic()
        if not dirty:
            return
        if self._taken:
            for raw, users in dirty.items():
                self._taken.setdefault(raw, []).extend(users)
        else:
            self._taken = dirty
        self._taken_since = since if self._taken_since is None else min(self._taken_since, since)

    def _takeover_began(self) -> float | None:
        """When a takeover not yet run that may gain items began: a member left the view (a start
        alone gains nothing unseen: what the log restores is dirty) and has not come back, and this
        node holds items."""
        if self._takeover is None or self._member_left is None or not len(self._store):
            return None
        before = self._takeover[1]
        return None if before is not None and before <= self._members else self._member_left

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug must not end checkpointing; the pending items stay pending
                log.exception("checkpoint round failed")
            await asyncio.sleep(self._interval)

    async def tick(self, *, force: bool = False) -> None:
        """One round: take the store's dirty items, follow ownership changes, write what is due."""
        self._take_dirty()
        dirty, since = self._taken, self._taken_since
        self._taken, self._taken_since = {}, None
        members = frozenset(self._live_members()) | {self._me}
        now = time.monotonic()
        if not self._started:
            # What the sinks hold is unknown (a restart, a new sink): every item owned, in full.
            self._started = True
            self._takeover = (now + self._takeover_delay, None)
        elif members != self._members and self._takeover is None:
            self._takeover = (now + self._takeover_delay, self._members)
        if self._members - members and self._member_left is None:
            self._member_left = now
        members_changed, self._members = members != self._members, members
        if self._takeover is not None and now >= self._takeover[0]:
            self._take_over(
                self._takeover[1], members, since=now if self._member_left is None else self._member_left
            )
            self._takeover = None
            self._member_left = None
        # Each item is hashed once, as it comes in; what is pending was this node's when it came in,
        # so it is looked at again only when the members change.
        mine = self._owned_by_me(members)
        if since is not None and len(members) > 1:
            dirty = {raw: users for raw, users in dirty.items() if mine(raw)}
        for lane in self.lanes:
            if since is not None:
                lane.absorb(dirty, since=since)
            if members_changed:
                lane.forget(mine)
        now_ms = int(time.time() * 1000)
        encoded: dict[bytes, bytes] = {}
        for lane in self.lanes:
            if force or lane.due(now):
                await lane.flush(self._store, now_ms, encoded)

    def _owned_by_me(self, members: frozenset[str]) -> Callable[[bytes], bool]:
        if members == {self._me}:  # alone: everything, without a hash per item
            return lambda raw: True
        ordered = sorted(members)
        return lambda raw: owner(raw, ordered) == self._me

    def _take_over(self, before: frozenset[str] | None, after: frozenset[str], *, since: float) -> None:
        """The items this node owns under ``after`` and did not under ``before`` (all it owns when
        ``before`` is None: a start) are written in full; their lag counts from ``since``: when a
        member left, whose unwritten changes these may hold (else now: a start, whose held changes
        the log made dirty)."""
        is_mine = self._owned_by_me(after)
        was_mine = (lambda raw: False) if before is None else self._owned_by_me(before | {self._me})
        keys = (raw for raw in self._store.item_keys() if is_mine(raw) and not was_mine(raw))
        gained: dict[bytes, Collection[int]] = dict.fromkeys(keys, ())  # full: every user, none named
        if gained:
            log.info("members changed; this node now owns %d more items", len(gained))
            for lane in self.lanes:
                lane.absorb(gained, since=since, full=True)
