"""The keyring changes at runtime (install, use, remove) without losing a frame, and locks out old keys."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from gossip import FrameError, GossipConfig, Gossiper, MemoryNetwork, Peer
from gossip.errors import FrameAuthError
from gossip.security import Keyring, KeyringError, key_id
from gossip.wire import FrameCodec, MessageType
from tests.gossip.conftest import KEY, OTHER_KEY, Cluster, memory_cluster, wait_until
from tests.gossip.replicas import GrowOnlySets

THIRD_KEY = b"yet-another-cluster-secret-abcde"
CAP = 1 << 20


def test_install_verifies_use_signs_and_remove_stops_verifying() -> None:
    ring = Keyring([KEY])
    old, new = FrameCodec(Keyring([KEY]), CAP), FrameCodec(Keyring([OTHER_KEY]), CAP)
    mine = FrameCodec(ring, CAP)
    from_new = new.encode(MessageType.REPLICATED, ["n2", 1])
    with pytest.raises(FrameAuthError):
        mine.decode(from_new)

    assert ring.install(OTHER_KEY) and not ring.install(OTHER_KEY)  # idempotent
    assert mine.decode(from_new) == (MessageType.REPLICATED, ["n2", 1])
    assert ring.primary_id == key_id(KEY), "installing does not change the signing key"
    old.decode(mine.encode(MessageType.REPLICATED, ["n1", 1]))

    assert ring.use(key_id(OTHER_KEY)) and not ring.use(key_id(OTHER_KEY))
    new.decode(mine.encode(MessageType.REPLICATED, ["n1", 2]))
    with pytest.raises(FrameAuthError):
        old.decode(mine.encode(MessageType.REPLICATED, ["n1", 3]))
    mine.decode(old.encode(MessageType.REPLICATED, ["n0", 1]))  # the old key still verifies

    assert ring.remove(key_id(KEY)) and not ring.remove(key_id(KEY))
    with pytest.raises(FrameAuthError):
        mine.decode(old.encode(MessageType.REPLICATED, ["n0", 2]))
    assert ring.ids() == [key_id(OTHER_KEY)]


def test_the_ring_refuses_changes_that_would_break_it() -> None:
    ring = Keyring([KEY, OTHER_KEY])
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(key_id(KEY))
    with pytest.raises(KeyringError, match="install it first"):
        ring.use(key_id(THIRD_KEY))
    with pytest.raises(KeyringError, match="at least 16"):
        ring.install(b"short")
    with pytest.raises(KeyringError):
        Keyring([KEY, b"tiny"])
    assert ring.ids() == [key_id(KEY), key_id(OTHER_KEY)], "a refused change leaves the ring as it was"


def test_a_frame_is_named_and_signed_by_the_same_key_snapshot() -> None:
    """Even if the ring changes between two frames, each frame's key id names the key that signed it."""
    ring = Keyring([KEY, OTHER_KEY])
    codec = FrameCodec(ring, CAP)
    rng = random.Random(7)
    verifier = FrameCodec(Keyring([KEY, OTHER_KEY]), CAP)
    for i in range(200):
        ring.use(key_id(rng.choice([KEY, OTHER_KEY])))
        frame = codec.encode(MessageType.REPLICATED, ["n1", i])
        assert verifier.decode(frame)[1] == ["n1", i]
        assert frame[22:26] == ring.primary_id


# -- a whole cluster rotating while it writes ------------------------------------------------------


def everyone(cluster: Cluster, operation: str, argument: bytes) -> None:
    for member in cluster.members:
        getattr(member.gossiper.keyring, operation)(argument)


def total(cluster: Cluster, stat: str) -> int:
    return sum(member.gossiper.stats()[stat] for member in cluster.members)


async def test_a_cluster_rotates_its_key_while_writing_and_rejects_nothing(started: Any) -> None:
    cluster: Cluster = await started(memory_cluster(MemoryNetwork(seed=3), 3))
    await wait_until(
        lambda: all(m.gossiper.stats()["members_alive"] == 2 for m in cluster.members), timeout=5
    )
    written: dict[str, set[int]] = {m.name: set() for m in cluster.members}
    value = 0

    async def write_for(seconds: float) -> None:
        nonlocal value
        for _ in range(int(seconds / 0.01)):
            member = cluster.members[value % 3]
            member.replica.add(b"likes", value)
            written[member.name].add(value)
            value += 1
            await asyncio.sleep(0.01)

    await write_for(0.2)
    everyone(cluster, "install", OTHER_KEY)
    await write_for(0.2)
    everyone(cluster, "use", key_id(OTHER_KEY))
    await write_for(0.2)
    everyone(cluster, "remove", key_id(KEY))
    await write_for(0.2)

    expected = set().union(*written.values())
    await wait_until(
        lambda: all(m.replica.value(b"likes") == expected for m in cluster.members),
        timeout=5,
        what="every write on every member",
    )
    assert total(cluster, "frames_rejected_auth") == 0
    assert total(cluster, "frames_rejected") == 0
    assert all(m.gossiper.keyring.ids() == [key_id(OTHER_KEY)] for m in cluster.members)


async def test_using_a_key_before_every_member_installed_it_gets_frames_rejected(started: Any) -> None:
    """The counter the rotation test relies on does see a rotation done in the wrong order."""
    cluster: Cluster = await started(memory_cluster(MemoryNetwork(seed=4), 3))
    await wait_until(
        lambda: all(m.gossiper.stats()["members_alive"] == 2 for m in cluster.members), timeout=5
    )
    cluster.members[0].gossiper.keyring.install(OTHER_KEY)
    cluster.members[0].gossiper.keyring.use(key_id(OTHER_KEY))
    cluster.members[0].replica.add(b"early", 1)
    await wait_until(lambda: total(cluster, "frames_rejected_auth") > 0, timeout=5)
    assert cluster.members[1].replica.value(b"early") == frozenset()


async def test_a_member_restarted_with_only_the_removed_key_gets_zero_frames_accepted(started: Any) -> None:
    network = MemoryNetwork(seed=5)
    cluster: Cluster = await started(memory_cluster(network, 3))
    await wait_until(
        lambda: all(m.gossiper.stats()["members_alive"] == 2 for m in cluster.members), timeout=5
    )
    everyone(cluster, "install", OTHER_KEY)
    everyone(cluster, "use", key_id(OTHER_KEY))
    everyone(cluster, "remove", key_id(KEY))
    cluster.members[0].replica.add(b"inside", 1)
    await wait_until(lambda: cluster.replicas_equal(), timeout=5)

    restarted = cluster.members.pop()  # n2 comes back with the cluster file it had before rotating
    await restarted.gossiper.stop()
    seeds = tuple(Peer(m.name, *m.address) for m in cluster.members)
    host, port = restarted.address
    config = GossipConfig.local(restarted.name, keyring=(KEY,), host=host, port=port, seeds=seeds)
    replica = GrowOnlySets()
    replica.add(b"outside", 666)
    stale = Gossiper(config, replica, network.transport(restarted.address), rng=random.Random(9))
    rejected_before = total(cluster, "frames_rejected_auth")
    await stale.start()
    try:
        await wait_until(
            lambda: (
                total(cluster, "frames_rejected_auth") > rejected_before
                and stale.stats()["frames_rejected_auth"] >= 3
            ),
            timeout=5,
            what="both sides reject the other's frames",
        )
        await asyncio.sleep(0.5)  # several probe, sync and delta rounds
        assert stale.stats()["frames_received"] == 0, "the stale member accepted a frame"
        assert replica.value(b"inside") == frozenset()
        assert all(b"outside" not in m.replica.sets for m in cluster.members)
        # It said goodbye when it stopped; its rejoin (which would revive it) is never accepted.
        assert all(m.state_of(restarted.name) != "alive" for m in cluster.members)
    finally:
        await stale.stop()


def test_frame_auth_error_is_a_frame_error() -> None:
    """Transports reject on FrameError; an authentication failure must be one."""
    assert issubclass(FrameAuthError, FrameError)
