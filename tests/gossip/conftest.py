"""Fixtures and helpers for gossip tests: a keyring, cluster builders, bounded waiting."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from gossip import GossipConfig, Gossiper, MemoryNetwork, Peer
from gossip.transport import Address
from tests.gossip.replicas import GrowOnlySets

KEY = b"cluster-secret-for-tests-0123456"
OTHER_KEY = b"a-different-cluster-secret-98765"


async def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.01, what: str = "condition"
) -> float:
    """Poll ``condition`` until true; fail after ``timeout`` seconds. Returns the seconds it took."""
    started = time.monotonic()
    for _ in range(int(timeout / interval) + 1):
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            break
        await asyncio.sleep(interval)
    if condition():
        return time.monotonic() - started
    raise AssertionError(f"{what} not reached within {timeout} s")


@dataclass
class Member:
    """One member of a test cluster."""

    name: str
    address: Address
    replica: GrowOnlySets
    gossiper: Gossiper

    def state_of(self, name: str) -> str | None:
        for member in self.gossiper.members():
            if member.name == name:
                return member.state.value
        return None


@dataclass
class Cluster:
    """Members on one in-memory network."""

    network: MemoryNetwork
    members: list[Member]

    def replicas_equal(self, members: Sequence[Member] | None = None) -> bool:
        members = self.members if members is None else members
        first = members[0].replica.snapshot()
        return all(member.replica.snapshot() == first for member in members[1:])


def memory_address(index: int) -> Address:
    return ("10.0.0.1", 7000 + index)


def memory_cluster(network: MemoryNetwork, size: int, **overrides: Any) -> Cluster:
    """``size`` gossipers on ``network``, all seeded with member 0 and 1, fast local timings."""
    names = [f"n{index}" for index in range(size)]
    addresses = [memory_address(index) for index in range(size)]
    seeds = tuple(Peer(names[i], *addresses[i]) for i in range(min(2, size)))
    members = []
    for index, (name, address) in enumerate(zip(names, addresses, strict=True)):
        config = GossipConfig.local(name, keyring=(KEY,), host=address[0], port=address[1], seeds=seeds)
        config = replace(config, **overrides)
        replica = GrowOnlySets()
        gossiper = Gossiper(config, replica, network.transport(address), rng=random.Random(index))
        members.append(Member(name, address, replica, gossiper))
    return Cluster(network, members)


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Cluster], Any]]:
    """Start a cluster's gossipers; stop them all at teardown whatever the test did."""
    clusters: list[Cluster] = []

    async def start(cluster: Cluster) -> Cluster:
        clusters.append(cluster)
        for member in cluster.members:
            await member.gossiper.start()
        return cluster

    yield start
    for cluster in clusters:
        for member in cluster.members:
            await member.gossiper.stop()
        assert not cluster.network.handler_errors, cluster.network.handler_errors
