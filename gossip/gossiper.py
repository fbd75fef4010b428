"""The gossip facade: one object per member that owns the loops (memberlist's ``memberlist.go``).

``Gossiper`` wires the transport, the frame codec, SWIM membership, delta dissemination and
anti-entropy together, routes each authenticated message to its module, and keeps the counters. The
node hands it a ``Replica`` and reads ``members()`` and ``stats()``; it never sees a frame.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gossip.antientropy import CATCH_UP_SLICE, SETTLE_INTERVALS, AntiEntropy
from gossip.config import GossipConfig
from gossip.dissemination import DeltaDisseminator
from gossip.errors import FrameAuthError, FrameError, GossipError
from gossip.member import MemberInfo, MemberState
from gossip.membership import Membership
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
from gossip.replica import Replica
from gossip.replication import Replicator
from gossip.security import Keyring
from gossip.tcp import TcpTransport
from gossip.transport import Address, Transport
from gossip.wire import FrameCodec, MessageType

log = logging.getLogger(__name__)

#: Anti-entropy rounds come at most this many times less often on an unhealthy member while a member
#: is recovering, for this many anti-entropy intervals after it came back.
MAX_ROUND_STRETCH = 2
RECOVERY_WINDOW_ROUNDS = 5
#: The second round with a recovered member waits this many delta intervals (past the settling
#: horizon, ``antientropy.SETTLE_INTERVALS``), so keys written just before it came back are in it.
RECOVERY_ROUND_DELAY = SETTLE_INTERVALS + 1

#: What each message type's bytes are accounted under in ``stats()``.
_CONCERN = {
    MessageType.PING: "membership",
    MessageType.PING_REQ: "membership",
    MessageType.ACK: "membership",
    MessageType.MEMBERS: "membership",
    MessageType.DELTAS: "deltas",
    MessageType.TREE: "anti_entropy",
    MessageType.KEYS: "anti_entropy",
    MessageType.STATES: "anti_entropy",
    MessageType.REPLICATE: "deltas",
    MessageType.REPLICATED: "deltas",
}

#: Seconds ``stop`` waits for the loops to end once cancelled.
STOP_TIMEOUT = 2.0

#: Counters always present in ``stats()``, zero until something happens.
STAT_NAMES = (
    "frames_sent",
    "bytes_sent",
    "frames_received",
    "bytes_received",
    "frames_rejected",
    "frames_rejected_auth",
    "frames_dropped",
    "frames_oversized",
    "handler_errors",
    "deltas_sent",
    "deltas_merged",
    "deltas_unsent",
    "payload_errors",
    "anti_entropy_rounds",
    "anti_entropy_in_sync",
    "anti_entropy_keys_repaired",
    "anti_entropy_busy",
    "anti_entropy_sweeps",
    "anti_entropy_states_oversized",
    "anti_entropy_states_deferred",
    "probes",
    "probe_failures",
    "members_suspected",
    "members_declared_dead",
    "members_revived",
    "refutations",
    "probe_timer_late",
    "replicate_merged",
    "replicate_short",
    "replicate_timeouts",
    *(f"bytes_sent_{concern}" for concern in sorted(set(_CONCERN.values()))),
)


class Gossiper:
    """Replicates a ``Replica`` across the cluster and tracks who is in it."""

    def __init__(
        self,
        config: GossipConfig,
        replica: Replica,
        transport: Transport | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        if transport is None:
            transport = TcpTransport(config.host, config.port, max_frame_bytes=config.max_frame_bytes)
        self._transport: Transport = transport
        self._codec = FrameCodec(Keyring(config.keyring), config.max_frame_bytes)
        self._counters: Counter[str] = Counter(dict.fromkeys(STAT_NAMES, 0))
        rng = rng or random.Random()
        self._membership = Membership(config, config.address, self._send, self._counters, rng)
        self._deltas = DeltaDisseminator(
            config, replica, self._membership.gossip_peers, self._multicast, self._counters, rng
        )
        self._anti_entropy = AntiEntropy(
            config, replica, self._origin, self._send, self._counters, rng, self._membership.awareness.scale
        )
        self._replicator = Replicator(
            replica, self._origin, self._membership.live_peers, self._send, self._counters
        )
        self._membership.on_recovered = self._repair_recovered
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        #: No sweep before this (monotonic seconds): at most one per anti-entropy interval.
        self._next_sweep = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """This member's name."""
        return self._config.name

    @property
    def address(self) -> Address:
        """The gossip address peers reach us at (the bound port once started)."""
        return self._transport.address

    async def start(self) -> None:
        """Listen, take the replica's keys to index, contact the seeds, and start the gossip loops."""
        if self._running:
            raise GossipError("gossiper already started")
        await self._transport.start(self._receive)
        self._running = True
        self._membership.advertise(self._transport.address)
        try:
            # What the replica holds at start waits to be indexed, not as a change: the loops index
            # it in slices once a peer is there to compare with (alone, an index is work nobody reads),
            # so a node holding millions of items serves at once instead of after digesting them all.
            self._anti_entropy.refresh(0)
        except BaseException:  # a replica that cannot be read: leave nothing listening
            self._running = False
            await self._transport.stop()
            raise
        self._anti_entropy.noting_changes = True
        self._membership.join()
        self._spawn(self._membership.run_probes, "probes")
        self._spawn(self._membership.run_sync, "membership sync")
        self._spawn(self._deltas.run, "delta dissemination")
        self._spawn(self._run_anti_entropy, "anti-entropy")
        self._spawn(self._run_indexing, "indexing")

    async def stop(self) -> None:
        """Push the last deltas, say goodbye, stop the loops and the transport."""
        if not self._running:
            return
        self._deltas.flush()
        self._membership.leave()
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a task that lost its cancellation must not hang shutdown
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
        self._tasks.clear()
        self._membership.close()
        self._running = False
        await self._transport.stop()

    async def __aenter__(self) -> Gossiper:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what the node reads and triggers ---------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keyring every frame is signed and verified with; mutating it rotates keys at once."""
        return self._codec.keyring

    def members(self) -> list[MemberInfo]:
        """Every known member, this one first: name, address, state, incarnation."""
        return self._membership.members()

    def stats(self) -> dict[str, int]:
        """Counters (see ``STAT_NAMES``) plus the transport's, and gauges of the current view."""
        stats = dict(self._counters)
        for name, value in self._transport.counters().items():
            stats[name] = stats.get(name, 0) + value
        for state in MemberState:
            stats[f"members_{state.value}"] = len(self._membership.peers(state))
        stats["anti_entropy_keys_indexed"] = len(self._anti_entropy.tree)
        stats["health_score"] = self._membership.awareness.score
        return stats

    def deltas_ready(self) -> None:
        """The replica has new local deltas: push them now unless a push went out within the interval."""
        self._deltas.wake()

    def flush_deltas(self) -> int:
        """Push pending deltas now instead of at the next tick; how many (key, delta) items went."""
        return self._deltas.flush()

    async def replicate(self, items: Sequence[tuple[bytes, bytes]], copies: int, timeout: float) -> int:
        """Push ``items`` to every live peer now and wait (at most ``timeout`` seconds) until ``copies``
        of them confirm they merged it; how many did. The write levels above 1 rest on this."""
        return await self._replicator.replicate(items, copies, timeout)

    def request_states(self, keys: Sequence[bytes]) -> int:
        """Ask every live peer for its full states of ``keys`` now (anti-entropy's STATES message,
        want list only); their answers are merged as they come. How many peers were asked. A node
        waiting for a write it has not yet received (a causal token) pulls it with this."""
        peers = self._membership.live_peers()
        if keys:
            for peer in peers:
                self._anti_entropy.request(peer.address, keys)
        return len(peers)

    def anti_entropy_round(self) -> bool:
        """Start an anti-entropy round with a random live peer now; False if none (or still indexing)."""
        peers = self._membership.peers(MemberState.ALIVE) or self._membership.live_peers()
        if not peers:
            return False
        return self._anti_entropy.start_round(self._rng.choice(peers).address)

    # -- loops ------------------------------------------------------------------------------------

    def _repair_recovered(self, member: MemberInfo) -> None:
        """A member is reachable again after frames to it were lost (a partition, a pause): repair
        with it now, and once more when the keys changed just before it came back have settled,
        instead of waiting for it to come up in the random choice of rounds."""
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        self._anti_entropy.recovering(RECOVERY_WINDOW_ROUNDS * self._config.anti_entropy_interval)
        loop.call_soon(self._anti_entropy.start_round, member.address)
        settled = self._membership.awareness.scale(RECOVERY_ROUND_DELAY * self._config.delta_interval)
        loop.call_later(settled, self._anti_entropy.start_round, member.address)

    async def _run_anti_entropy(self) -> None:
        while True:
            # An overloaded member repairs less often: its differences are mostly deltas in its queue.
            # Not while a member is coming back, though: a partition's failed probes raise the score too.
            base = self._config.anti_entropy_interval
            interval = self._membership.awareness.scale(base)
            if self._anti_entropy.is_recovering:
                interval = min(interval, MAX_ROUND_STRETCH * base)
            await asyncio.sleep(interval * self._rng.uniform(0.75, 1.25))
            if self._membership.live_peers():  # alone, an index is work nobody reads
                await self._anti_entropy.catch_up()
                self.anti_entropy_round()

    async def _run_indexing(self) -> None:
        """Index changes every delta interval: small steady slices, and exact change times. Alone,
        changes wait in the replica; the first round after a peer appears indexes them in slices."""
        while True:
            await asyncio.sleep(self._config.delta_interval)
            if self._membership.live_peers():
                self._anti_entropy.refresh(CATCH_UP_SLICE, for_round=False)
                if time.monotonic() >= self._next_sweep and self._anti_entropy.take_quiet():
                    self._sweep()

    def _sweep(self) -> None:
        """Changes have settled: start a round with every alive peer (up to ``full_fanout_peers``), so
        whatever the burst's lost deltas left different is repaired within a round trip, everywhere."""
        self._next_sweep = time.monotonic() + self._config.anti_entropy_interval
        peers = self._membership.peers(MemberState.ALIVE)
        chosen = self._rng.sample(peers, min(len(peers), self._config.full_fanout_peers))
        if chosen:
            self._counters["anti_entropy_sweeps"] += 1
        for peer in chosen:
            self._anti_entropy.start_round(peer.address)

    def _spawn(self, loop: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        """Run ``loop`` until stop, restarting it if it ever fails (a bug must not end gossip)."""

        async def supervised() -> None:
            while True:
                try:
                    await loop()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s loop failed; restarting", what)
                    self._counters["handler_errors"] += 1
                    await asyncio.sleep(self._config.probe_interval)

        self._tasks.append(asyncio.create_task(supervised(), name=f"gossip {self.name}: {what}"))

    # -- frames in and out ------------------------------------------------------------------------

    def _origin(self) -> Origin:
        return Origin(self._config.name, self._transport.address)

    def _send(self, address: Address, message: Message) -> None:
        self._multicast((address,), message)

    def _multicast(self, addresses: Sequence[Address], message: Message) -> None:
        """Encode and sign once, send to each address, count."""
        if not self._running:
            return
        try:
            frame = self._codec.encode(message.kind, to_body(message))
        except FrameError as exc:
            self._counters["frames_oversized"] += 1
            log.warning("not sending %s: %s", message.kind.name, exc)
            return
        for address in addresses:
            self._transport.send(address, frame)
        sent = len(frame) * len(addresses)
        self._counters["frames_sent"] += len(addresses)
        self._counters["bytes_sent"] += sent
        self._counters[f"bytes_sent_{_CONCERN[message.kind]}"] += sent

    def _receive(self, frame: bytes) -> None:
        """The transport's handler: authenticate, parse, route. FrameError tells it to reject."""
        try:
            kind, body = self._codec.decode(frame)
        except FrameAuthError:  # a stranger, or a member whose key we removed (or not yet installed)
            self._counters["frames_rejected_auth"] += 1
            raise
        message = parse(kind, body)
        if self._running:
            try:
                self._route(message)
            except FrameError:  # a handler's own check (a node outside the tree...): rejected, not received
                raise
            except Exception:  # a replica or handler bug: log it, keep serving everyone else
                log.exception("handling %s failed", kind.name)
                self._counters["handler_errors"] += 1
        self._counters["frames_received"] += 1  # each frame counts once: received, or rejected
        self._counters["bytes_received"] += len(frame)

    def _route(self, message: Message) -> None:
        match message:
            case Ping():
                self._membership.handle_ping(message)
            case PingReq():
                self._membership.handle_ping_req(message)
            case Ack():
                self._membership.handle_ack(message)
            case Members():
                self._membership.handle_members(message)
            case Deltas():
                self._deltas.handle(message)
            case Tree():
                self._anti_entropy.handle_tree(message)
            case Keys():
                self._anti_entropy.handle_keys(message)
            case States():
                self._anti_entropy.handle_states(message)
            case Replicate():
                self._replicator.handle_replicate(message)
            case Replicated():
                self._replicator.handle_replicated(message)
