"""Replayed gossip frames change nothing: every frame of a busy history, delivered again to everyone.

Gossip authenticates frames but does not number them, so an insider-free replay (a captured frame
sent again) must be harmless by construction: deltas and states are idempotent joins, and membership
claims are ordered by incarnation. The replicas are the node's real ``LikeStore``s, so a replayed
like delta meets the unlike that came after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator

import pytest

from gossip import GossipConfig, Gossiper, MemoryNetwork, Peer
from gossip.transport import Address
from gossip.wire import COMPRESSED, MessageType
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.gossip.conftest import KEY, wait_until

NAMES = ("n0", "n1", "n2")
MEMBERSHIP_STATS = ("refutations", "members_suspected", "members_declared_dead", "members_revived")


class TappedNetwork(MemoryNetwork):
    """A memory network that keeps a copy of every frame it delivers."""

    def __init__(self) -> None:
        super().__init__(seed=11)
        self.delivered: list[tuple[Address, Address, bytes]] = []

    def _deliver(self, source: Address, destination: Address, frame: bytes) -> None:
        self.delivered.append((source, destination, frame))
        super()._deliver(source, destination, frame)


@dataclasses.dataclass
class Node:
    name: str
    address: Address
    store: LikeStore
    gossiper: Gossiper

    def state_of(self, name: str) -> str | None:
        return next((i.state.value for i in self.gossiper.members() if i.name == name), None)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[TappedNetwork, list[Node]]]:
    network = TappedNetwork()
    addresses = [("10.0.0.1", 7100 + i) for i in range(len(NAMES))]
    seeds = tuple(Peer(name, *address) for name, address in zip(NAMES, addresses, strict=True))
    members = []
    for i, (name, address) in enumerate(zip(NAMES, addresses, strict=True)):
        config = GossipConfig.local(name, keyring=(KEY,), host=address[0], port=address[1], seeds=seeds)
        # Slower failure detection than the preset: replaying stalls the loop (and a loaded machine
        # stalls it more), which must not cause genuine suspicions that would look like the replay's doing.
        config = dataclasses.replace(
            config, probe_interval=0.5, probe_timeout=0.4, suspicion_timeout=2.0, membership_sync_interval=0.3
        )
        store = LikeStore(f"{name}-{i:016x}.1")
        members.append(Node(name, address, store, Gossiper(config, store, network.transport(address))))
    for member in members:
        await member.gossiper.start()
    try:
        yield network, members
    finally:
        for member in members:
            await member.gossiper.stop()
        assert not network.handler_errors, network.handler_errors


def view(members: list[Node]) -> list[object]:
    """Everything replay could disturb: stores, likers, membership, membership events."""
    post = ItemKey("post", 1)
    return [
        (
            m.store.fingerprint(),
            sorted(m.store.likers(post, after=None, limit=1000)[0]),
            sorted((i.name, i.state.value, i.incarnation) for i in m.gossiper.members()),
            [m.gossiper.stats()[stat] for stat in MEMBERSHIP_STATS],
        )
        for m in members
    ]


def converged(members: list[Node]) -> bool:
    prints = {m.store.fingerprint() for m in members}
    alive = all(all(i.state.value == "alive" for i in m.gossiper.members()) for m in members)
    return len(prints) == 1 and alive and all(len(m.gossiper.members()) == len(NAMES) for m in members)


async def test_replaying_every_captured_frame_changes_nothing(
    nodes: tuple[TappedNetwork, list[Node]],
) -> None:
    network, members = nodes
    await wait_until(lambda: converged(members), timeout=30, what="a formed cluster")
    post = ItemKey("post", 1)
    # Likes, then unlikes of the same users on other nodes: a replayed like must not resurrect one.
    for user in range(30):
        members[user % 3].store.like(post, user)
    await wait_until(lambda: converged(members), timeout=30, what="likes everywhere")
    for user in range(0, 30, 2):
        members[(user + 1) % 3].store.unlike(post, user)
    members[0].store.add_to_counter(post, "views", 5)
    # A partition long enough to declare n2 dead, then healed: suspicion, death and refutation frames.
    network.partition([members[0].address, members[1].address], [members[2].address])
    await wait_until(lambda: members[0].state_of("n2") == "dead", timeout=30, what="n2 declared dead")
    members[2].store.like(post, 1000)
    network.heal()
    await wait_until(lambda: converged(members), timeout=30, what="convergence after the heal")

    before = view(members)
    assert sorted(members[0].store.likers(post, after=None, limit=1000)[0]) == [
        *range(1, 30, 2),
        1000,
    ]
    captured = list(network.delivered)
    kinds = {MessageType(frame[21] & ~COMPRESSED) for _, _, frame in captured}
    assert {MessageType.PING, MessageType.ACK, MessageType.MEMBERS, MessageType.DELTAS} <= kinds, kinds
    rng = random.Random(5)
    for round_ in range(2):
        order = captured[:]
        if round_:
            rng.shuffle(order)
        for i, (source, _, frame) in enumerate(order):
            for member in members:  # to its destination and to everyone else
                network._deliver(source, member.address, frame)
            if i % 20 == 0:
                await asyncio.sleep(0)  # let the loop breathe, so probes stay on time
    await asyncio.sleep(1.0)  # whatever a replay set off (answers, merges, refutations) has happened
    assert view(members) == before
    assert all(m.gossiper.stats()["frames_rejected"] == 0 for m in members)
    assert all(m.gossiper.stats()["payload_errors"] == 0 for m in members)
