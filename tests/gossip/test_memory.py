"""The in-memory network does what the other tests rely on: lose, duplicate, reorder, partition, stop."""

from __future__ import annotations

import asyncio

import pytest

from gossip import FrameError, MemoryNetwork
from gossip.memory import MemoryTransport
from gossip.transport import Address

A: Address = ("10.0.0.1", 1)
B: Address = ("10.0.0.1", 2)
C: Address = ("10.0.0.1", 3)


async def endpoints(
    network: MemoryNetwork, *addresses: Address
) -> tuple[dict[Address, MemoryTransport], dict[Address, list[bytes]]]:
    """Started transports at ``addresses``, and the inbox each one delivers into."""
    transports: dict[Address, MemoryTransport] = {}
    inboxes: dict[Address, list[bytes]] = {}
    for address in addresses:
        inbox = inboxes[address] = []
        transports[address] = network.transport(address)
        await transports[address].start(inbox.append)
    return transports, inboxes


async def test_loss_and_duplication_happen_at_about_the_configured_rates() -> None:
    network = MemoryNetwork(seed=1, drop_rate=0.2, duplicate_rate=0.1)
    transports, inboxes = await endpoints(network, A, B)
    sender = transports[A]
    for index in range(2000):
        sender.send(B, index.to_bytes(2, "big"))
    await asyncio.sleep(0.01)
    assert 300 < network.counters["frames_lost"] < 500
    assert 100 < network.counters["frames_duplicated"] < 220
    assert len(inboxes[B]) == 2000 - network.counters["frames_lost"] + network.counters["frames_duplicated"]


async def test_jitter_reorders_frames() -> None:
    network = MemoryNetwork(seed=2, jitter=0.02)
    transports, inboxes = await endpoints(network, A, B)
    for index in range(50):
        transports[A].send(B, bytes([index]))
    await asyncio.sleep(0.05)
    received = [frame[0] for frame in inboxes[B]]
    assert sorted(received) == list(range(50)) and received != list(range(50))


async def test_partitions_and_stops_block_frames_until_healed() -> None:
    network = MemoryNetwork(seed=3)
    transports, inboxes = await endpoints(network, A, B, C)
    network.partition([A], [B])
    for destination in (B, C):
        transports[A].send(destination, b"x")
    await asyncio.sleep(0.001)
    assert inboxes[B] == [] and inboxes[C] == [b"x"], "C is in no group and reaches everyone"
    network.heal()
    network.stop(B)
    transports[A].send(B, b"y")
    transports[B].send(A, b"z")
    await asyncio.sleep(0.001)
    assert inboxes[B] == [] and inboxes[A] == []
    network.start(B)
    transports[A].send(B, b"w")
    await asyncio.sleep(0.001)
    assert inboxes[B] == [b"w"]


async def test_handler_rejections_are_counted_and_surprises_recorded() -> None:
    network = MemoryNetwork(seed=4)

    def picky(frame: bytes) -> None:
        if frame == b"bad":
            raise FrameError("bad")
        if frame == b"bug":
            raise KeyError("bug")

    receiver = network.transport(B)
    await receiver.start(picky)
    sender = network.transport(A)
    await sender.start(lambda frame: None)
    for frame in (b"bad", b"bug", b"fine"):
        sender.send(B, frame)
    await asyncio.sleep(0.001)
    assert receiver.counters()["frames_rejected"] == 1
    assert [type(error) for error in network.handler_errors] == [KeyError]


async def test_an_address_cannot_be_taken_twice() -> None:
    network = MemoryNetwork()
    await network.transport(A).start(lambda frame: None)
    with pytest.raises(ValueError):
        await network.transport(A).start(lambda frame: None)
