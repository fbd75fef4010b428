"""Replicas converge on the in-memory network through loss, duplication, reordering and partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gossip import MemoryNetwork
from gossip.antientropy import AntiEntropy
from tests.gossip.conftest import Cluster, memory_cluster, wait_until

Start = Callable[[Cluster], Awaitable[Cluster]]


async def test_five_replicas_converge_under_loss_duplication_and_reordering(started: Start) -> None:
    network = MemoryNetwork(seed=7, drop_rate=0.2, duplicate_rate=0.2, delay=0.001, jitter=0.01)
    cluster = await started(memory_cluster(network, 5))
    expected: dict[bytes, set[int]] = {}
    for round_ in range(20):
        for index, member in enumerate(cluster.members):
            key = f"item:{(round_ * 5 + index) % 7}".encode()
            value = round_ * 100 + index
            member.replica.add(key, value)
            expected.setdefault(key, set()).add(value)
        await asyncio.sleep(0.01)

    await wait_until(cluster.replicas_equal, timeout=15, what="convergence")
    assert cluster.members[0].replica.snapshot() == {key: frozenset(v) for key, v in expected.items()}
    assert network.counters["frames_lost"] > 0, "the network was supposed to lose frames"
    assert network.counters["frames_duplicated"] > 0, "the network was supposed to duplicate frames"
    stats = [member.gossiper.stats() for member in cluster.members]
    assert sum(s["deltas_merged"] for s in stats) > 0
    assert all(s["frames_rejected"] == 0 and s["handler_errors"] == 0 for s in stats)


async def test_a_small_cluster_converges_in_about_one_delta_interval(started: Start) -> None:
    network = MemoryNetwork(seed=1)
    cluster = await started(memory_cluster(network, 4, delta_interval=0.05, anti_entropy_interval=60.0))
    await wait_until(
        lambda: all(len(m.gossiper.members()) == 4 for m in cluster.members), timeout=5, what="membership"
    )
    cluster.members[0].replica.add(b"k", 1)
    took = await wait_until(cluster.replicas_equal, timeout=2, what="delta delivery")
    assert took < 0.5
    assert sum(m.gossiper.stats()["anti_entropy_keys_repaired"] for m in cluster.members) == 0


async def test_a_two_three_partition_heals_to_one_value(started: Start) -> None:
    network = MemoryNetwork(seed=3, delay=0.001, jitter=0.003)
    cluster = await started(memory_cluster(network, 5))
    left, right = cluster.members[:2], cluster.members[2:]
    await wait_until(
        lambda: all(len(m.gossiper.members()) == 5 for m in cluster.members), timeout=5, what="membership"
    )

    network.partition([m.address for m in left], [m.address for m in right])
    for value, member in enumerate(cluster.members):
        member.replica.add(b"contested", value)
        member.replica.add(f"side-{member in left}".encode(), value)
    await wait_until(
        lambda: cluster.replicas_equal(left) and cluster.replicas_equal(right), timeout=5, what="sides agree"
    )
    assert left[0].replica.value(b"contested") == {0, 1}
    assert right[0].replica.value(b"contested") == {2, 3, 4}
    # Long enough for each side to declare the other dead.
    await wait_until(lambda: left[0].state_of(right[0].name) == "dead", timeout=5, what="partition seen")

    network.heal()
    await wait_until(cluster.replicas_equal, timeout=10, what="convergence after heal")
    assert cluster.members[0].replica.value(b"contested") == {0, 1, 2, 3, 4}
    await wait_until(
        lambda: all(m.state_of(o.name) == "alive" for m in cluster.members for o in cluster.members),
        timeout=10,
        what="everyone alive again",
    )


async def test_a_payload_the_replica_rejects_is_counted_and_skipped(started: Start) -> None:
    network = MemoryNetwork(seed=5)
    cluster = await started(memory_cluster(network, 2, anti_entropy_interval=60.0))
    sender, receiver = cluster.members
    await wait_until(lambda: receiver.state_of(sender.name) == "alive", timeout=5, what="membership")

    sender.replica._deltas[b"bad"] = set()  # queue a delta, then corrupt its encoding below
    original = sender.replica.drain_deltas

    def poisoned() -> list[tuple[bytes, bytes]]:
        return [(b"bad", b"\xc1 not msgpack"), *original(), (b"good", b"\x91\x2a")]

    sender.replica.drain_deltas = poisoned  # type: ignore[method-assign]
    sender.gossiper.flush_deltas()
    await wait_until(lambda: receiver.replica.value(b"good") == {42}, timeout=2, what="good delta merged")
    assert receiver.gossiper.stats()["payload_errors"] >= 1
    assert b"bad" not in receiver.replica.sets


async def test_a_larger_cluster_spreads_deltas_epidemically_through_fanout(
    started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forwarding alone: the sweep once the origin is quiet (30 ms here, less than the epidemic's
    # 80 ms) would repair too, like anti-entropy, which is off.
    monkeypatch.setattr(AntiEntropy, "take_quiet", lambda self: False)
    network = MemoryNetwork(seed=11, delay=0.02)
    cluster = await started(
        memory_cluster(network, 10, full_fanout_peers=3, fanout=2, anti_entropy_interval=60.0)
    )
    await wait_until(
        lambda: all(len(m.gossiper.members()) == 10 for m in cluster.members), timeout=5, what="membership"
    )
    origin = cluster.members[0]
    before = sum(m.gossiper.stats()["deltas_sent"] for m in cluster.members)
    keys = [b"epidemic:%d" % i for i in range(20)]
    for key in keys:
        origin.replica.add(key, 1)
        assert origin.gossiper.flush_deltas() == 1
    await asyncio.sleep(0.5)  # four generations of 20 ms hops, with room to spare

    # An epidemic reaches everyone with high probability, not certainty (anti-entropy, off here,
    # catches the rest): with fanout 2 over 4 generations, well over 90% of (member, delta) pairs.
    reached = sum(member.replica.value(key) == {1} for member in cluster.members for key in keys)
    assert reached >= 0.9 * len(cluster.members) * len(keys), reached
    stats = [member.gossiper.stats() for member in cluster.members]
    assert sum(s["anti_entropy_keys_repaired"] for s in stats) == 0, "forwarding alone should have done it"
    # ceil(log2(9 + 1)) = 4 generations of fanout 2, no loss: exactly 2 + 4 + 8 + 16 copies each.
    assert sum(s["deltas_sent"] for s in stats) - before == 30 * len(keys)


async def test_a_delta_batch_larger_than_a_frame_is_split_and_an_oversized_delta_is_skipped(
    started: Start,
) -> None:
    frame_cap = 64 * 1024
    network = MemoryNetwork(seed=8, max_frame_bytes=frame_cap)
    cluster = await started(
        memory_cluster(network, 2, max_frame_bytes=frame_cap, anti_entropy_interval=3600.0)
    )
    sender, receiver = cluster.members
    await wait_until(lambda: sender.state_of(receiver.name) == "alive", timeout=5, what="contact")
    frames_before = sender.gossiper.stats()["frames_sent"]
    wide = list(range(0, 400_000, 1000))  # ~2.7 KiB of msgpack per key
    for index in range(100):
        sender.replica.add(f"wide-{index}".encode(), *(value + index for value in wide))
    sender.replica.add(b"huge", *range(100_000))  # ~290 KiB: can never fit one frame
    sender.gossiper.flush_deltas()

    await wait_until(
        lambda: all(receiver.replica.value(f"wide-{i}".encode()) for i in range(100)),
        timeout=5,
        what="every part of the split batch",
    )
    stats = sender.gossiper.stats()
    assert stats["frames_sent"] - frames_before >= 4, "270 KiB of deltas needs several 64 KiB frames"
    assert stats["frames_oversized"] == 1
    assert b"huge" not in receiver.replica.sets
    assert receiver.gossiper.stats()["frames_rejected"] == 0
