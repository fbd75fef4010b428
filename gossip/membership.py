"""SWIM membership and failure detection (Das, Gupta, Motivala, 2002; memberlist's ``state.go``).

Every ``probe_interval`` one member, taken round robin from a shuffled list, is pinged. Without an
ack within ``probe_timeout``, ``indirect_probes`` other members ping it on our behalf (ping-req) and
forward its ack; still nothing by the end of the interval and it becomes *suspect*. A suspect that
does not refute within ``suspicion_timeout`` is declared *dead*.

Claims about a member are ordered by its incarnation number, which only the member itself raises:
alive@i beats alive or suspect below i; suspect@i beats alive@i; dead@i beats alive and suspect up
to i. A member that hears itself suspected or declared dead at its incarnation (or alive at a higher
one, left from a previous life) refutes with incarnation + 1, which is how a dead member that
answers again comes back. Updates ride on pings and acks (``BroadcastQueue``), and every
``membership_sync_interval`` the whole view is exchanged with one random member, dead ones included,
so a healed partition or a restarted member rejoins even when no probe reaches it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from gossip.awareness import Awareness
from gossip.broadcasts import BroadcastQueue
from gossip.config import GossipConfig
from gossip.member import MemberInfo, MemberState
from gossip.messages import MAX_SEQ, Ack, Members, Message, Ping, PingReq
from gossip.suspicion import Suspicions
from gossip.transport import Address

ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD

log = logging.getLogger(__name__)

#: How a membership module sends a message: encoded, signed and counted by the caller.
Send = Callable[[Address, Message], None]


class Membership:
    """This member's view of the cluster, kept current by SWIM probes and gossip."""

    def __init__(
        self,
        config: GossipConfig,
        address: Address,
        send: Send,
        counters: Counter[str],
        rng: random.Random,
    ) -> None:
        self._config = config
        self._send = send
        self._counters = counters
        self._rng = rng
        self._me = MemberInfo(config.name, address, ALIVE, 0)
        self._peers: dict[str, MemberInfo] = {}
        self._broadcasts = BroadcastQueue(config.retransmit_mult)
        self._suspicions = Suspicions(config.suspicion_timeout, self._suspicion_expired)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._forwards: dict[int, tuple[Address, int]] = {}
        self.awareness = Awareness()
        #: When each member now dead was declared so (monotonic seconds).
        self._died_at: dict[str, float] = {}
        #: Called when a suspect or dead member is alive again (a healed partition, a resumed pause).
        self.on_recovered: Callable[[MemberInfo], None] | None = None
        self._seq = rng.randrange(2**32)
        self._probe_order: list[str] = []

    # -- the view ---------------------------------------------------------------------------------

    @property
    def local(self) -> MemberInfo:
        """This member as it advertises itself."""
        return self._me

    def members(self) -> list[MemberInfo]:
        """Every known member, this one first, then by name."""
        return [self._me, *sorted(self._peers.values(), key=lambda member: member.name)]

    def peers(self, *states: MemberState) -> list[MemberInfo]:
        """Other members currently in one of ``states``."""
        return [member for member in self._peers.values() if member.state in states]

    def live_peers(self) -> list[MemberInfo]:
        """Other members not declared dead: who is probed and whose receipts count."""
        return self.peers(ALIVE, SUSPECT)

    def gossip_peers(self) -> list[MemberInfo]:
        """Live members and those dead for less than ``gossip_to_the_dead``: where deltas go."""
        return self.live_peers() + self._recently_dead()

    def _recently_dead(self) -> list[MemberInfo]:
        """Members declared dead less than ``gossip_to_the_dead`` ago."""
        horizon = time.monotonic() - self._config.gossip_to_the_dead
        return [
            member
            for member in self._peers.values()
            if member.state is DEAD and self._died_at.get(member.name, 0.0) > horizon
        ]

    # -- lifecycle --------------------------------------------------------------------------------

    def advertise(self, address: Address) -> None:
        """Set the address we advertise (known once the transport is bound)."""
        self._me = dataclasses.replace(self._me, address=address)

    def join(self) -> None:
        """Push our view to every seed and ask for theirs."""
        for address in self._seed_addresses():
            self._send(address, Members(self._me, tuple(self.members()), reply=True))

    def leave(self) -> None:
        """Tell every live peer we are gone, so they stop probing and gossiping to us at once."""
        farewell = dataclasses.replace(self._me, state=DEAD)
        for peer in self.live_peers():
            self._send(peer.address, Members(farewell, (farewell,), reply=False))

    def close(self) -> None:
        """Cancel timers and outstanding probes."""
        self._suspicions.clear()
        for waiter in self._acks.values():
            waiter.cancel()
        self._acks.clear()
        self._forwards.clear()

    async def run_probes(self) -> None:
        """Probe one member per ``probe_interval`` (stretched while we are unhealthy), forever."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            target = self._next_probe_target()
            if target is not None:
                await self.probe(target)
            self._reach_recently_dead()
            pause = max(0.0, self.awareness.scale(self._config.probe_interval) - (loop.time() - started))
            asleep = loop.time()
            await asyncio.sleep(pause)
            if loop.time() - asleep - pause > self._config.probe_timeout:
                self.awareness.apply(1)  # our own loop is starved: timeouts we measure would lie
                self._counters["probe_timer_late"] += 1

    async def run_sync(self) -> None:
        """Exchange the whole view with one random member per ``membership_sync_interval``, forever."""
        while True:
            await asyncio.sleep(self._config.membership_sync_interval * self._rng.uniform(0.5, 1.5))
            self.sync_once()

    def _reach_recently_dead(self) -> None:
        """Push-pull with one member dead for less than ``gossip_to_the_dead``, every probe period.

        Dead members are not probed, so without this a healed partition or a resumed pause would
        rejoin only at the next full sync, seconds later; a member that really died costs one
        unanswered frame a period, for a bounded time (Serf's reconnect, at probe cadence).
        """
        recent = self._recently_dead()
        if recent:
            target = self._rng.choice(recent)
            self._send(target.address, Members(self._me, tuple(self.members()), reply=True))

    def sync_once(self) -> None:
        """Push-pull the whole view with one member of any state, or a seed not heard of yet."""
        candidates = [peer.address for peer in self._peers.values()]
        known = set(candidates)
        candidates += [address for address in self._seed_addresses() if address not in known]
        if candidates:
            target = self._rng.choice(candidates)
            self._send(target, Members(self._me, tuple(self.members()), reply=True))

    # -- failure detection ------------------------------------------------------------------------

    async def probe(self, target: MemberInfo) -> bool:
        """Ping ``target`` directly, then indirectly; suspect it if neither is acked in time."""
        config = self._config
        seq = self._next_seq()
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[seq] = acked
        self._counters["probes"] += 1
        try:
            self._send(target.address, Ping(seq, self._me, target.name, self._updates_for(target.name)))
            if await _settled(acked, self.awareness.scale(config.probe_timeout)):
                self.awareness.apply(-1)
                return True
            helpers = [peer for peer in self.peers(ALIVE) if peer.name != target.name]
            for helper in self._rng.sample(helpers, min(config.indirect_probes, len(helpers))):
                self._send(helper.address, PingReq(seq, self._me, target))
            if await _settled(acked, self.awareness.scale(config.probe_interval - config.probe_timeout)):
                self.awareness.apply(-1)
                return True
        finally:
            self._acks.pop(seq, None)
        self.awareness.apply(1)
        self._counters["probe_failures"] += 1
        self.apply(dataclasses.replace(target, state=SUSPECT), cause="probe failed")
        return False

    def _next_probe_target(self) -> MemberInfo | None:
        """Round robin over a shuffled list, so every member is probed within n intervals."""
        for _ in range(2):
            while self._probe_order:
                member = self._peers.get(self._probe_order.pop())
                if member is not None and member.state is not DEAD:
                    return member
            self._probe_order = [peer.name for peer in self.live_peers()]
            self._rng.shuffle(self._probe_order)
        return None

    def _suspicion_expired(self, name: str, incarnation: int) -> None:
        member = self._peers.get(name)
        if member is not None and member.state is SUSPECT and member.incarnation <= incarnation:
            self._counters["members_declared_dead"] += 1
            self.apply(dataclasses.replace(member, state=DEAD), cause="suspicion timed out")

    # -- message handlers -------------------------------------------------------------------------

    def handle_ping(self, ping: Ping) -> None:
        """Ack a ping meant for us, after learning what it carries."""
        if ping.target != self._me.name:
            self._counters["pings_misdirected"] += 1  # another member now lives at this address
            return
        self.apply(ping.sender)
        self.apply_all(ping.updates)
        ack = Ack(ping.seq, self._me.name, self._updates_for(ping.sender.name))
        self._send(ping.sender.address, ack)

    def handle_ping_req(self, request: PingReq) -> None:
        """Ping ``request.target`` for the requester and forward its ack."""
        self.apply(request.sender)
        seq = self._next_seq()
        self._forwards[seq] = (request.sender.address, request.seq)
        asyncio.get_running_loop().call_later(self._config.probe_interval, self._forwards.pop, seq, None)
        target = request.target
        self._send(target.address, Ping(seq, self._me, target.name, self._updates_for(target.name)))

    def handle_ack(self, ack: Ack) -> None:
        """Complete our probe, or forward the ack of a probe we made for someone else."""
        self.apply_all(ack.updates)
        waiter = self._acks.get(ack.seq)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        forward = self._forwards.pop(ack.seq, None)
        if forward is not None:
            requester, seq = forward
            self._send(requester, Ack(seq, ack.sender, ()))

    def handle_members(self, message: Members) -> None:
        """Merge a whole view; answer with ours when asked."""
        # Only a leaving member sends itself as dead (``leave``): its farewell.
        self.apply(message.sender, cause="left" if message.sender.state is DEAD else "gossip")
        self.apply_all(message.members)
        if message.reply:
            self._send(message.sender.address, Members(self._me, tuple(self.members()), reply=False))

    # -- the SWIM rules ---------------------------------------------------------------------------

    def apply_all(self, updates: tuple[MemberInfo, ...]) -> None:
        """Apply each update in order."""
        for update in updates:
            self.apply(update)

    def apply(self, update: MemberInfo, *, cause: str = "gossip") -> None:
        """Take ``update`` into the view if it supersedes what we hold, and pass it on. ``cause`` is
        why we believe it, for the log: a probe of ours, a timer of ours, gossip, or a farewell."""
        if update.name == self._me.name:
            self._refute_if_needed(update)
            return
        current = self._peers.get(update.name)
        if not _supersedes(update, current):
            return
        self._peers[update.name] = update
        if current is None or current.state is not update.state:
            _log_change(current, update, cause)
        if update.state is SUSPECT:
            self._counters["members_suspected"] += 1
            self._suspicions.start(update.name, update.incarnation)
        else:
            self._suspicions.cancel(update.name)
        if current is not None and current.state is DEAD and update.state is not DEAD:
            self._counters["members_revived"] += 1
        recovered = current is not None and current.state is not ALIVE and update.state is ALIVE
        if recovered and self.on_recovered is not None:
            self.on_recovered(update)  # frames to it may have been lost meanwhile: repair soon
        if update.state is DEAD and (current is None or current.state is not DEAD):
            self._died_at[update.name] = time.monotonic()
        self._broadcasts.enqueue(update)

    def _refute_if_needed(self, claim: MemberInfo) -> None:
        """Outbid a claim that we are suspect or dead, or a stale alive claim from a previous life."""
        me = self._me
        if claim.state is ALIVE:
            if claim.incarnation < me.incarnation or (
                claim.incarnation == me.incarnation and claim.address == me.address
            ):
                return
        elif claim.incarnation < me.incarnation:
            return
        # Saturate: a (buggy) claim at the largest incarnation the wire carries must not make ours
        # unencodable, which would silence this member for good.
        self._me = dataclasses.replace(me, incarnation=min(claim.incarnation + 1, MAX_SEQ))
        self._counters["refutations"] += 1
        self.awareness.apply(1)  # others thought us dead or dying: we are probably the slow one
        self._broadcasts.enqueue(self._me)

    def _updates_for(self, recipient: str) -> tuple[MemberInfo, ...]:
        """Piggyback: queued updates, plus the recipient's own bad standing so it can refute."""
        updates = self._broadcasts.take(self._config.max_piggyback, len(self._peers) + 1)
        standing = self._peers.get(recipient)
        if standing is not None and standing.state is not ALIVE and standing not in updates:
            updates.append(standing)
        return tuple(updates)

    def _seed_addresses(self) -> list[Address]:
        return [
            seed.address
            for seed in self._config.seeds
            if seed.name != self._me.name and seed.address != self._me.address
        ]

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 2**64
        return self._seq


def _log_change(current: MemberInfo | None, update: MemberInfo, cause: str) -> None:
    """One line per change of a member's state in this view (a new incarnation alone is none), so an
    operator can follow a failure without the probes and retries that led to it."""
    old = "none" if current is None else str(current.state)
    new = str(update.state)
    if current is None:
        change, message = "joined", f"member {update.name} joined ({new})"
    elif cause == "left":
        change, message = "left", f"member {update.name} left ({old} -> {new})"
    else:
        change, message = new, f"member {update.name} {old} -> {new} ({cause})"
    log.info(
        message,
        extra={
            "event": "member_changed",
            "member": update.name,
            "change": change,
            "old": old,
            "new": new,
            "incarnation": update.incarnation,
            "cause": cause,
        },
    )


def _supersedes(update: MemberInfo, current: MemberInfo | None) -> bool:
    """Whether ``update`` overrides ``current`` under SWIM's incarnation order."""
    if current is None:
        return update.state is not DEAD  # an unknown member's obituary tells us nothing useful
    if update.incarnation != current.incarnation:
        return update.incarnation > current.incarnation
    return _RANK[update.state] > _RANK[current.state]


_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}


async def _settled(waiter: asyncio.Future[None], timeout: float) -> bool:
    """Wait up to ``timeout`` for ``waiter`` without cancelling it; whether it completed."""
    if not waiter.done():
        await asyncio.wait([waiter], timeout=max(0.0, timeout))
    return waiter.done() and not waiter.cancelled()
