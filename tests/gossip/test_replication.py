"""Acknowledged replication (write levels above 1): receipts come only from peers that merged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gossip import MemoryNetwork
from gossip.errors import TooFewPeers
from tests.gossip.conftest import Cluster, memory_cluster, wait_until
from tests.gossip.replicas import encode

Start = Callable[[Cluster], Awaitable[Cluster]]


async def _three(started: Start, network: MemoryNetwork) -> Cluster:
    # Deltas and anti-entropy slowed down, so only Replicate can have carried a value in time.
    cluster = await started(memory_cluster(network, 3, delta_interval=30.0, anti_entropy_interval=60.0))
    await wait_until(
        lambda: all(len(m.gossiper.members()) == 3 for m in cluster.members), timeout=5, what="membership"
    )
    return cluster


async def test_replicate_returns_once_the_asked_number_of_peers_merged(started: Start) -> None:
    cluster = await _three(started, MemoryNetwork(seed=1))
    first = cluster.members[0]
    confirmed = await first.gossiper.replicate([(b"k", encode({7}))], copies=2, timeout=2.0)
    assert confirmed == 2
    assert all(m.replica.sets.get(b"k") == {7} for m in cluster.members[1:])


async def test_replicate_reports_how_many_confirmed_when_a_peer_is_cut_off(started: Start) -> None:
    network = MemoryNetwork(seed=2)
    cluster = await _three(started, network)
    first, _, third = cluster.members
    network.partition([first.address], [third.address])
    confirmed = await first.gossiper.replicate([(b"k", encode({8}))], copies=2, timeout=0.3)
    assert confirmed == 1
    assert first.gossiper.stats()["replicate_timeouts"] == 1
    assert third.replica.sets.get(b"k") is None


async def test_replicate_asks_for_no_more_copies_than_there_are_live_peers(started: Start) -> None:
    cluster = await _three(started, MemoryNetwork(seed=3))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TooFewPeers) as refused:
        await cluster.members[0].gossiper.replicate([(b"k", encode({9}))], copies=3, timeout=5.0)
    assert loop.time() - began < 1.0  # answered at once, not after the timeout
    assert (refused.value.alive, refused.value.needed) == (2, 3)
    assert cluster.members[0].gossiper.stats()["replicate_short"] == 1
