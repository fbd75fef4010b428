"""Anti-entropy: find the keys two members disagree on by Merkle descent, and swap their states.

A round is a stateless ping-pong; each message says everything its answer needs::

    A -> B  TREE  level 0: [root], mask         B compares, answers with the children of what differs
    B -> A  TREE  level 1: [16 hashes], mask    A compares, answers likewise, one level deeper ...
    x -> y  KEYS  [(leaf, [(key, item hash)])]  sent by whoever first sees differing *leaves*
    y -> x  STATES  states y has that x lacks or differs on, and the keys y wants
    x -> y  STATES  the wanted states

so both sides end with the join of both (push-pull). The bytes of a round grow with the number of
differing keys times the depth, not with the number of keys: an in-sync round is one 60-byte
frame, and one differing key among millions costs about a kilobyte. Item hashes stand in for the
replica's digests on the wire (16 bytes whatever the digest size; equal iff the digests are).

The index is kept current from ``replica.drain_changed()`` every delta interval; each differing
level is capped at ``anti_entropy_max_leaves`` nodes, chosen at random, so a member far behind
catches up over several bounded rounds instead of one giant one.

Settling: under load, most differences a round finds are deltas still in flight, and repairing
them ships whole states for nothing. So a key that changed here within ``SETTLE_INTERVALS`` delta
intervals (stretched by the member's own load, as Lifeguard stretches probe timeouts: an overloaded
member's deltas queue longer) is left alone. It keeps its last settled digest in the tree
(re-digesting a hot item at every change would cost more than the rounds that read it), and every
TREE message carries a mask, the leaves of the keys its sender is leaving to deltas: both sides hash
as if those leaves were empty, and each answer adds its own settling leaves. So a round descends only
into real differences, not into every key whose delta is on its way or was merged a moment ago (a
descent costs a few hundred bytes per level and key, and under load hundreds of keys are settling:
their descents would be most of what anti-entropy sends). A KEYS list marks a settling
key with an empty hash so the other side leaves it alone as well. A hot key (a viral post) never
stops changing and would never be repaired, so for ``REPAIR_WINDOW_ROUNDS`` intervals of every
period of ``REPAIR_PERIOD_ROUNDS`` intervals a key that has been settling for a whole period is
repaired like any other: every difference is repaired within about two periods. Each Merkle leaf's
window opens at its own offset in the period (on the wall clock, so members agree without talking):
opened all at once, every member would ship and merge every hot item's state in the same moment, a
stall for every like in flight; staggered, only a share of the hot keys is repaired at a time.
A hot key whose state is heavy (``HEAVY_STATE_BYTES``, by ``Replica.weight``) is not repaired in its
windows: digesting, encoding and joining a viral post's megabytes every period would stall every
member, while its deltas bring the same likes; it is repaired by state once it settles.
A key merged from a peer's full state does not settle: no delta of it is in flight, and the join
should go on to the members still lacking it.

Sweeps: a round with one random peer per interval takes several intervals to reach every member,
and a delta lost at the end of a burst has no later delta behind it. So once this member's replica
has been quiet for the settle time (``take_quiet``), the gossiper starts a round with every alive
peer at once, at most once per anti-entropy interval: after a burst, a healed partition or a run of
lost frames, every member is compared within a round trip.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from gossip.config import GossipConfig
from gossip.errors import FrameError, PayloadError
from gossip.merkle import DEPTH, LEAVES, MaskedTree, MerkleTree, bucket_of, valid_node
from gossip.messages import Keys, Message, Origin, States, Tree
from gossip.replica import Replica
from gossip.transport import Address
from gossip.wire import BATCH_RESERVE, batches, bytes_cost

#: How anti-entropy sends a message: encoded, signed and counted by the caller.
Send = Callable[[Address, Message], None]
#: Keys indexed per slice while catching up, between which other tasks get to run.
CATCH_UP_SLICE = 5000
#: A key changed within this many delta intervals (500 ms with the default interval) is settling: its
#: deltas may still be in flight. Long enough that an item liked every few hundred milliseconds under
#: load stays settling instead of flapping in and out, which would have every member re-digest it and
#: ship its state for nothing.
SETTLE_INTERVALS = 10
#: A replica unchanged for this many delta intervals is quiet: its burst is over, and a sweep
#: compares it with every peer (``take_quiet``).
QUIET_INTERVALS = 3
#: Settle and quiet times stretch with this member's load, by up to this many times while a member
#: is recovering (settling) or always (quiet).
MAX_SETTLE_STRETCH = 2
#: Every this many anti-entropy intervals (at least ``MIN_REPAIR_PERIOD`` seconds), keys settling
#: for a whole period are repaired during ... (A key that never stops changing differs mostly by
#: deltas in flight, so each such repair ships its state for little: the period is long so that
#: these repairs stay a small share of a busy cluster's CPU.)
REPAIR_PERIOD_ROUNDS = 30
MIN_REPAIR_PERIOD = 30.0
#: ... this many intervals, so keys that never stop changing are repaired too.
REPAIR_WINDOW_ROUNDS = 2
#: Upper bound of the bytes one masked leaf adds to a TREE message (a msgpack integer).
MASK_LEAF_BYTES = 5
#: The hash a KEYS entry carries for a key its sender is leaving to deltas.
SETTLING = b""
#: Seconds a state too large for a frame is not encoded again for shipping: encoding a viral post's
#: state is costly, and states only grow while likes come in.
OVERSIZED_BACKOFF = 300.0
#: Keys remembered as oversized at most (past it, the expired ones are forgotten).
MAX_OVERSIZED = 1024
#: A key whose state weighs more than this (``Replica.weight``, in bytes) is left to deltas while it
#: changes, repair windows included, and repaired by state once it settles; its state is not shipped
#: while it changes either. Repairing a hot post by state in every window would mean, every period,
#: digesting and encoding it on every member and joining its whole state on the others: a stall for
#: every like in flight, for likes its deltas bring anyway.
HEAVY_STATE_BYTES = 1 << 20


class AntiEntropy:
    """The digest index of the replica and both sides of the repair protocol."""

    def __init__(
        self,
        config: GossipConfig,
        replica: Replica,
        origin: Callable[[], Origin],
        send: Send,
        counters: Counter[str],
        rng: random.Random,
        health: Callable[[float], float] = lambda seconds: seconds,
    ) -> None:
        """``health`` stretches a duration by this member's load (``Awareness.scale``)."""
        self._config = config
        self._health = health
        self._replica = replica
        self._origin = origin
        self._send = send
        self._counters = counters
        self._rng = rng
        self._budget = config.max_frame_bytes - BATCH_RESERVE
        self._max_mask = self._budget // 2 // MASK_LEAF_BYTES
        self.tree = MerkleTree()
        self._stale: dict[bytes, None] = {}  # keys changed but not re-indexed yet
        #: When each recently changed key was seen changing, oldest first (monotonic seconds).
        self._changed_at: OrderedDict[bytes, float] = OrderedDict()
        #: Since when each of those keys has been settling without a break, and its leaf.
        self._settling_since: dict[bytes, float] = {}
        self._leaf_of: dict[bytes, int] = {}
        #: Off until the start-up index is built: loading what is on disk is not a change.
        self.noting_changes = False
        self._settle = SETTLE_INTERVALS * config.delta_interval
        self._quiet = QUIET_INTERVALS * config.delta_interval
        #: Until when (monotonic seconds) settling is stretched only boundedly: see ``_settle_time``.
        self._recovering_until = 0.0
        self._repair_period = max(MIN_REPAIR_PERIOD, REPAIR_PERIOD_ROUNDS * config.anti_entropy_interval)
        self._repair_window = REPAIR_WINDOW_ROUNDS * config.anti_entropy_interval
        #: Keys merged from a peer's full state since the last refresh (see ``refresh``).
        self._repaired: set[bytes] = set()
        #: When the replica last changed, and whether no sweep has compared it with every peer since.
        self._last_change = 0.0
        self._unswept = False
        #: Keys whose state did not fit in a frame, and until when (monotonic seconds) to skip them.
        self._oversized: dict[bytes, float] = {}

    # -- the index --------------------------------------------------------------------------------

    def refresh(self, limit: int | None = None, *, for_round: bool = True) -> int:
        """Re-index keys the replica reports changed (up to ``limit``); how many remain to index now
        (settling keys wait, uncounted). Between rounds (``for_round`` false) even hot keys wait:
        digesting a hot item at every change would cost far more than the round that needs it."""
        changed = self._replica.drain_changed()
        repaired, self._repaired = self._repaired, set()
        if self.noting_changes:
            now = time.monotonic()
            self._unswept = self._unswept or bool(changed)
            for key in changed:
                if key in repaired:
                    # A repair merged a whole state: no delta of it is in flight, so the join is
                    # ready to go on to the members still lacking it without settling (again), and
                    # a stream of repairs does not keep this member from ever being quiet.
                    self._stale[key] = None
                    continue
                self._last_change = now
                if key not in self._changed_at:
                    self._settling_since[key] = now
                    self._leaf_of[key] = bucket_of(key)
                self._changed_at[key] = now
                self._changed_at.move_to_end(key)
                self._stale[key] = None
            settle = self._settle_time()
            while self._changed_at and next(iter(self._changed_at.values())) < now - settle:
                settled, _ = self._changed_at.popitem(last=False)
                del self._settling_since[settled]
                del self._leaf_of[settled]
        else:
            self._stale.update(dict.fromkeys(changed))
        # A settling key is digested once it settles: a hot item changing all the time would
        # otherwise be re-encoded at every refresh, and rounds leave it alone anyway.
        settling = self._settling(repair_window=for_round)
        budget = len(self._stale) if limit is None else limit
        deferred: list[bytes] = []
        while self._stale and budget > 0:
            key, _ = self._stale.popitem()
            if settling(key):
                deferred.append(key)
                continue
            self.tree.update(key, self._replica.digest(key))
            budget -= 1
        backlog = len(self._stale)
        self._stale.update(dict.fromkeys(deferred))
        return backlog

    def take_quiet(self) -> bool:
        """True once after each burst of changes, when all of it has settled: the moment to compare
        with every peer. A delta lost at the end of a burst has no later delta behind it, and a round
        with one random peer per interval would take several intervals to reach every member.

        Quiet means nothing changed for ``QUIET_INTERVALS`` delta intervals, stretched by load at
        most ``MAX_SETTLE_STRETCH`` times: a member whose replica stopped changing has no deltas
        queueing behind a busy loop, whatever its health score still says (the score decays only one
        acked probe at a time, and a partition raises it as much as overload does); the last deltas of
        a burst land within a couple of intervals, sooner than a key settles under load. So every key
        counts as settled from then on, and the sweep's rounds carry all of them."""
        quiet_for = min(self._health(self._quiet), MAX_SETTLE_STRETCH * self._quiet)
        if not self._unswept or time.monotonic() - self._last_change <= quiet_for:
            return False
        self._unswept = False
        self._changed_at.clear()
        self._settling_since.clear()
        self._leaf_of.clear()
        return True

    async def catch_up(self) -> None:
        """Index everything pending in slices, yielding between them (start-up with many keys)."""
        while self.refresh(CATCH_UP_SLICE):
            await asyncio.sleep(0)

    # -- the protocol -----------------------------------------------------------------------------

    def start_round(self, peer: Address) -> bool:
        """Open a round with ``peer`` by sending our root; False while the index is catching up."""
        if self._busy():
            return False
        self._counters["anti_entropy_rounds"] += 1
        ours = self.tree.masked(self._mask())
        self._send(peer, Tree(self._origin(), 0, ((0, ours.node(0, 0)),), tuple(sorted(ours.leaves))))
        return True

    def handle_tree(self, message: Tree) -> None:
        """Compare their node hashes with ours under their mask; descend into what differs (masking
        our settling leaves too from there on), or list the keys of differing leaves."""
        level = message.level
        if any(not valid_node(level, index) for index, _ in message.nodes):
            raise FrameError(f"TREE names a node outside the tree at level {level}")
        if any(not 0 <= leaf < LEAVES for leaf in message.masked):
            raise FrameError("TREE masks a leaf outside the tree")
        if self._busy():
            return
        theirs = self.tree.masked(message.masked)
        differing = [index for index, digest in message.nodes if theirs.node(level, index) != digest]
        if not differing:
            if level == 0:
                self._counters["anti_entropy_in_sync"] += 1
            return
        differing = self._cap(differing)
        ours = self.tree.masked(self._mask(theirs.leaves))
        reply_to = message.origin.address
        if level < DEPTH:
            self._descend(reply_to, level, differing, ours)
            return
        settling = self._settling()
        leaves = [
            (
                leaf,
                tuple(
                    (key, SETTLING if settling(key) else digest)
                    for key, digest in self.tree.entries(leaf).items()
                ),
            )
            for leaf in differing
            if leaf not in ours.leaves  # settling here: the next round compares it
        ]
        for leaf_batch in batches(leaves, _leaf_cost, self._budget):
            self._send(reply_to, Keys(self._origin(), tuple(leaf_batch)))

    def handle_keys(self, message: Keys) -> None:
        """Ship the states they lack or differ on; ask for the ones we lack or differ on."""
        if any(not 0 <= leaf < LEAVES for leaf, _ in message.leaves):
            raise FrameError("KEYS names a leaf outside the tree")
        if self._busy():
            return
        push: list[bytes] = []
        want: list[bytes] = []
        settling = self._settling()
        for leaf, entries in message.leaves:
            theirs = dict(entries)
            mine = self.tree.entries(leaf)
            want.extend(
                key
                for key, digest in theirs.items()
                if mine.get(key) != digest and digest != SETTLING and not settling(key)
            )
            push.extend(
                key
                for key, digest in mine.items()
                if theirs.get(key) not in (digest, SETTLING) and not settling(key)
            )
        self._ship(message.origin.address, push, want)

    def handle_states(self, message: States) -> None:
        """Merge the states they shipped; ship back the ones they want."""
        for key, state in message.states:
            try:
                self._replica.merge(key, state)
            except PayloadError:
                self._counters["payload_errors"] += 1
                continue
            self._repaired.add(key)
            self._counters["anti_entropy_keys_repaired"] += 1
        if message.want:
            settling = self._settling()
            self._ship(message.origin.address, [key for key in message.want if not settling(key)], ())

    def request(self, peer: Address, keys: Iterable[bytes]) -> None:
        """Ask ``peer`` for its states of ``keys`` outside a round: a STATES with only a want list,
        which ``handle_states`` answers (keys it holds and is not settling) like any other."""
        self._ship(peer, (), keys)

    def _ship(self, peer: Address, keys: Iterable[bytes], want: Iterable[bytes]) -> None:
        """Send the states of ``keys`` and the ``want`` list, split under the frame cap. A state too
        large for any frame is skipped (counted), and not encoded again for ``OVERSIZED_BACKOFF``
        seconds: only deltas can bring such an item to a peer."""
        now = time.monotonic()
        parts: list[tuple[bytes, bytes | None]] = []
        for key in keys:
            if self._oversized.get(key, 0.0) > now:
                continue
            if key in self._changed_at and self._replica.weight(key) > HEAVY_STATE_BYTES:
                self._counters["anti_entropy_states_deferred"] += 1
                continue
            state = self._replica.state(key)
            if state is None:
                continue
            if bytes_cost(key, state) > self._budget:
                self._counters["anti_entropy_states_oversized"] += 1
                if len(self._oversized) >= MAX_OVERSIZED:
                    self._oversized = {k: until for k, until in self._oversized.items() if until > now}
                self._oversized[key] = now + OVERSIZED_BACKOFF
                continue
            parts.append((key, state))
        parts.extend((key, None) for key in want)
        for batch in batches(parts, lambda part: bytes_cost(part[0], part[1] or b""), self._budget):
            shipped = tuple((key, state) for key, state in batch if state is not None)
            wanted = tuple(key for key, state in batch if state is None)
            self._send(peer, States(self._origin(), shipped, wanted))

    def _descend(self, peer: Address, level: int, differing: list[int], ours: MaskedTree) -> None:
        """Send our hashes of the children of ``differing`` nodes, masked as ``ours``."""
        masked = tuple(sorted(ours.leaves))
        budget = self._budget - MASK_LEAF_BYTES * len(masked)  # every batch carries the mask
        nodes = [node for index in differing for node in ours.children(level, index)]
        for batch in batches(nodes, lambda node: bytes_cost(node[1]) + 5, budget):
            self._send(peer, Tree(self._origin(), level + 1, tuple(batch), masked))

    def _mask(self, theirs: frozenset[int] = frozenset()) -> frozenset[int]:
        """The leaves our next TREE message masks: theirs and those of the keys this member leaves to
        deltas now, as many as fit beside a batch in a frame (a smaller mask only descends deeper)."""
        settling, leaf_of = self._settling(), self._leaf_of
        leaves = theirs | {leaf_of[key] for key in self._changed_at if settling(key)}
        if len(leaves) > self._max_mask:
            leaves = frozenset(sorted(leaves)[: self._max_mask])
        return leaves

    def _settling(self, *, repair_window: bool = True) -> Callable[[bytes], bool]:
        """Whether a key is left to deltas this round (see the module docstring)."""
        now = time.monotonic()
        horizon = now - self._settle_time()
        changed_at, since = self._changed_at, self._settling_since
        if repair_window:
            clock, hot, leaf_of = time.time(), now - self._repair_period, self._leaf_of
            period, window = self._repair_period, self._repair_window
            oversized, weight = self._oversized, self._replica.weight
            # A hot key whose state is too large to ship, or too heavy to ship while it changes,
            # keeps settling in its window too: digesting it (a second of CPU for a viral post)
            # could only find a difference no state will repair.
            return lambda key: (
                changed_at.get(key, 0.0) >= horizon
                and (
                    since.get(key, now) > hot
                    or not in_repair_window(leaf_of[key], clock, period, window)
                    or oversized.get(key, 0.0) > now
                    or weight(key) > HEAVY_STATE_BYTES
                )
            )
        return lambda key: changed_at.get(key, 0.0) >= horizon

    def _settle_time(self) -> float:
        """How long a changed key settles: stretched by this member's load (its deltas queue), but
        only boundedly for a while after a member came back (``recovering``): the failed probes of a
        partition raise the same health score and would hold the repairs back just when needed."""
        stretched = self._health(self._settle)
        if time.monotonic() < self._recovering_until:
            return min(stretched, MAX_SETTLE_STRETCH * self._settle)
        return stretched

    def recovering(self, seconds: float) -> None:
        """A member came back after frames to it were lost: repair promptly for ``seconds``."""
        self._recovering_until = max(self._recovering_until, time.monotonic() + seconds)

    @property
    def is_recovering(self) -> bool:
        """Whether a member came back recently (see ``recovering``)."""
        return time.monotonic() < self._recovering_until

    def _busy(self) -> bool:
        """Index recent changes, a bounded slice of them; True if a backlog remains.

        Answering from a half-built index would ship states needlessly, and indexing a huge backlog
        inside a handler would stall the event loop: so a member catching up sits rounds out.
        """
        if self.refresh(CATCH_UP_SLICE):
            self._counters["anti_entropy_busy"] += 1
            return True
        return False

    def _cap(self, differing: list[int]) -> list[int]:
        """At most ``anti_entropy_max_leaves`` nodes, a random choice so no branch starves."""
        cap = self._config.anti_entropy_max_leaves
        return differing if len(differing) <= cap else self._rng.sample(differing, cap)


def in_repair_window(leaf: int, clock: float, period: float, window: float) -> bool:
    """Whether wall-clock time ``clock`` falls in the repair window of the keys of ``leaf``: the
    first ``window`` seconds after the leaf's own offset in each ``period``."""
    offset: float = leaf * period / LEAVES
    return (clock - offset) % period < window


def _leaf_cost(leaf: tuple[int, tuple[tuple[bytes, bytes], ...]]) -> int:
    return 8 + sum(bytes_cost(*entry) for entry in leaf[1])
