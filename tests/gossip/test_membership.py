"""SWIM failure detection on the in-memory network, and the incarnation rules on their own."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from gossip import GossipConfig, MemberInfo, MemberState, MemoryNetwork
from gossip.membership import Membership
from gossip.messages import Message, Ping
from gossip.transport import Address
from tests.gossip.conftest import KEY, Cluster, Member, memory_cluster, wait_until

Start = Callable[[Cluster], Awaitable[Cluster]]
ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD


async def everyone_knows_everyone(cluster: Cluster) -> None:
    size = len(cluster.members)
    await wait_until(
        lambda: all(
            len(m.gossiper.members()) == size and m.gossiper.stats()["members_alive"] == size - 1
            for m in cluster.members
        ),
        timeout=5,
        what="full membership",
    )


async def watch_states(observer: Member, name: str, seen: list[str], stop: asyncio.Event) -> None:
    """Record every state ``observer`` gives ``name``, in order, without repeats."""
    for _ in range(100_000):
        state = observer.state_of(name)
        if state is not None and (not seen or seen[-1] != state):
            seen.append(state)
        if stop.is_set():
            return
        await asyncio.sleep(0.005)


async def test_a_stopped_member_turns_suspect_then_dead_then_alive_when_it_returns(started: Start) -> None:
    network = MemoryNetwork(seed=2, delay=0.001)
    cluster = await started(memory_cluster(network, 4))
    await everyone_knows_everyone(cluster)
    observer, victim = cluster.members[0], cluster.members[3]
    incarnation_before = victim.gossiper.members()[0].incarnation
    seen: list[str] = []
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_states(observer, victim.name, seen, done))

    network.stop(victim.address)
    await wait_until(
        lambda: all(m.state_of(victim.name) == "dead" for m in cluster.members[:3]), timeout=5, what="dead"
    )
    network.start(victim.address)
    await wait_until(
        lambda: all(m.state_of(victim.name) == "alive" for m in cluster.members), timeout=5, what="back alive"
    )
    done.set()
    await watcher

    assert seen[:4] == ["alive", "suspect", "dead", "alive"], seen
    assert victim.gossiper.members()[0].incarnation > incarnation_before, "it refuted its death"
    assert observer.gossiper.stats()["members_revived"] >= 1
    await wait_until(
        lambda: all(m.gossiper.stats()["members_alive"] == 3 for m in cluster.members),
        timeout=5,
        what="the returned member sees everyone alive",
    )


async def test_indirect_probes_keep_a_member_alive_when_only_one_link_fails(started: Start) -> None:
    network = MemoryNetwork(seed=4, delay=0.001)
    # Four members share one event loop here, so the preset's 60 ms indirect window is 5 ms of CPU on a
    # machine loaded twelvefold; a wider one keeps the test about indirect probes, not about CPU.
    cluster = await started(memory_cluster(network, 4, probe_interval=0.3, probe_timeout=0.1))
    await everyone_knows_everyone(cluster)
    a, b = cluster.members[0], cluster.members[1]
    network.partition([a.address], [b.address])  # the others still reach both

    seen: list[str] = []
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_states(a, b.name, seen, done))
    probes_before = a.gossiper.stats()["probes"]
    # A dozen probe rounds (seven suspicion timeouts on a quiet machine); counted, not timed, because
    # a starved loop stretches the probe interval (awareness) and must not make the test pass vacuously.
    await wait_until(
        lambda: a.gossiper.stats()["probes"] - probes_before >= 12, timeout=30, what="a dozen probes of a"
    )
    done.set()
    await watcher

    assert network.counters["frames_blocked"] > 0, "the direct link was supposed to be cut"
    assert seen == ["alive"], f"{b.name} was wrongly suspected: {seen}"


async def test_a_member_that_leaves_is_dead_at_once_and_rejoins_on_restart(started: Start) -> None:
    network = MemoryNetwork(seed=6)
    cluster = await started(memory_cluster(network, 3, suspicion_timeout=30.0))
    await everyone_knows_everyone(cluster)
    leaver = cluster.members[2]
    await leaver.gossiper.stop()
    # Far sooner than the 30 s suspicion timeout: the farewell said so.
    await wait_until(
        lambda: all(m.state_of(leaver.name) == "dead" for m in cluster.members[:2]), timeout=5, what="dead"
    )

    reborn = memory_cluster(network, 3, suspicion_timeout=30.0).members[2]
    cluster.members[2] = reborn  # the fixture stops the new one at teardown
    await reborn.gossiper.start()
    await wait_until(
        lambda: all(m.state_of(reborn.name) == "alive" for m in cluster.members), timeout=5, what="rejoined"
    )
    assert reborn.gossiper.members()[0].incarnation >= 1, "it outbid its own obituary"


# -- the rules, without a network ------------------------------------------------------------------


class Outbox:
    """Collects what a Membership sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[Address, Message]] = []

    def __call__(self, address: Address, message: Message) -> None:
        self.sent.append((address, message))


def lone_membership() -> tuple[Membership, Outbox]:
    outbox = Outbox()
    config = GossipConfig.local("me", keyring=(KEY,), port=9000)
    return Membership(config, ("127.0.0.1", 9000), outbox, Counter(), random.Random(0)), outbox


def peer(state: MemberState, incarnation: int, port: int = 9001) -> MemberInfo:
    return MemberInfo("peer", ("127.0.0.1", port), state, incarnation)


async def test_claims_about_a_member_are_ordered_by_incarnation_then_severity() -> None:
    membership, _ = lone_membership()

    def view() -> list[MemberInfo]:
        return membership.peers(ALIVE, SUSPECT, DEAD)

    membership.apply(peer(DEAD, 0))
    assert view() == [], "an obituary of a stranger adds nothing"
    membership.apply(peer(ALIVE, 1))
    membership.apply(peer(SUSPECT, 0))
    assert view() == [peer(ALIVE, 1)], "an older suspicion loses"
    membership.apply(peer(SUSPECT, 1))
    assert view() == [peer(SUSPECT, 1)], "suspect beats alive at the same incarnation"
    membership.apply(peer(ALIVE, 1))
    assert view() == [peer(SUSPECT, 1)], "alive needs a higher incarnation to refute"
    membership.apply(peer(DEAD, 1))
    assert view() == [peer(DEAD, 1)]
    membership.apply(peer(SUSPECT, 1))
    assert view() == [peer(DEAD, 1)], "dead beats suspect at the same incarnation"
    membership.apply(peer(ALIVE, 2, port=9002))
    assert view() == [peer(ALIVE, 2, port=9002)], "a refutation revives, at its new address"
    membership.close()


async def test_a_member_refutes_a_suspicion_of_itself_with_a_higher_incarnation() -> None:
    membership, outbox = lone_membership()
    me = membership.local
    membership.apply(MemberInfo("me", me.address, SUSPECT, 0))
    assert membership.local.incarnation == 1
    membership.apply(MemberInfo("me", me.address, DEAD, 5))
    assert membership.local.incarnation == 6
    membership.apply(MemberInfo("me", me.address, SUSPECT, 3))
    assert membership.local.incarnation == 6, "a stale suspicion needs no answer"

    # The refutation rides on the next message out.
    membership.apply(peer(ALIVE, 0))
    membership.handle_ping(Ping(7, peer(ALIVE, 0), "me", ()))
    (address, ack), *_ = outbox.sent
    assert address == peer(ALIVE, 0).address
    assert MemberInfo("me", me.address, ALIVE, 6) in ack.updates  # type: ignore[union-attr]
    membership.close()


async def test_a_ping_meant_for_another_member_is_not_acked() -> None:
    membership, outbox = lone_membership()
    membership.handle_ping(Ping(1, peer(ALIVE, 0), "someone-else", ()))
    assert outbox.sent == []
    membership.close()


async def test_deltas_still_go_to_a_member_for_a_while_after_it_is_declared_dead() -> None:
    membership, _ = lone_membership()
    membership.apply(peer(ALIVE, 1))
    membership.apply(peer(DEAD, 1))
    assert membership.live_peers() == [], "the dead are not probed, nor counted for receipts"
    assert membership.gossip_peers() == [peer(DEAD, 1)], "a false verdict must not cost repairs"
    membership._config = dataclasses.replace(membership._config, gossip_to_the_dead=0.0)
    assert membership.gossip_peers() == []
    membership.close()
