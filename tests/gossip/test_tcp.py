"""Gossip over real loopback TCP: convergence, reconnection, and rogue clients dropped and counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gossip import GossipConfig, Gossiper, Peer, TcpTransport
from gossip.security import Keyring
from gossip.wire import LENGTH_PREFIX, FrameCodec, MessageType
from tests.gossip.conftest import KEY, OTHER_KEY, wait_until
from tests.gossip.replicas import GrowOnlySets

HOST = "127.0.0.1"


def tcp_gossiper(name: str, *, port: int = 0, seed: Gossiper | None = None) -> tuple[Gossiper, GrowOnlySets]:
    seeds = () if seed is None else (Peer(seed.name, *seed.address),)
    config = GossipConfig.local(name, keyring=(KEY,), host=HOST, port=port, seeds=seeds)
    replica = GrowOnlySets()
    return Gossiper(config, replica), replica


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Gossiper, GrowOnlySets, Gossiper, GrowOnlySets]]:
    a, replica_a = tcp_gossiper("a")
    await a.start()
    b, replica_b = tcp_gossiper("b", seed=a)
    await b.start()
    try:
        await wait_until(
            lambda: a.stats()["members_alive"] == 1 and b.stats()["members_alive"] == 1,
            timeout=5,
            what="contact over TCP",
        )
        yield a, replica_a, b, replica_b
    finally:
        await b.stop()
        await a.stop()


async def send_raw(address: tuple[str, int], data: bytes) -> bool:
    """Send ``data`` on a fresh connection; whether the server then closed it on us (within 2 s)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 2.0) == b""
    except (ConnectionError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_two_gossipers_converge_over_loopback_tcp(
    pair: tuple[Gossiper, GrowOnlySets, Gossiper, GrowOnlySets],
) -> None:
    a, replica_a, b, replica_b = pair
    assert a.address[1] != 0 and b.address[1] != 0, "port 0 is resolved to the bound port"
    replica_a.add(b"item", 1)
    replica_b.add(b"item", 2)
    replica_b.add(b"other", 3)
    await wait_until(
        lambda: replica_a.snapshot() == replica_b.snapshot() == {b"item": {1, 2}, b"other": {3}},
        timeout=5,
        what="convergence over TCP",
    )
    assert a.stats()["deltas_merged"] >= 1 and b.stats()["deltas_merged"] >= 1
    assert a.stats()["bytes_received"] > 0 and a.stats()["frames_rejected"] == 0


async def test_rogue_clients_are_dropped_and_counted_and_the_node_keeps_serving(
    pair: tuple[Gossiper, GrowOnlySets, Gossiper, GrowOnlySets],
) -> None:
    a, replica_a, _, replica_b = pair
    stranger = FrameCodec(Keyring([OTHER_KEY]), 1 << 20)
    forged = stranger.encode(MessageType.DELTAS, ["b", 0, [[b"item", b"\x91\x63"]]])
    attacks = {
        "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "oversized length": LENGTH_PREFIX.pack(2**31) + b"x" * 64,
        "too short for a header": LENGTH_PREFIX.pack(3) + b"abc",
        "garbage of the announced length": LENGTH_PREFIX.pack(40) + bytes(range(40)),
        "signed with another key": forged,
    }
    for what, data in attacks.items():
        assert await send_raw(a.address, data), f"{what}: connection was not closed"

    assert a.stats()["frames_rejected"] == len(attacks)
    assert b"item" not in replica_a.sets, "the forged delta must not be merged"
    replica_b.add(b"after-attack", 7)
    await wait_until(lambda: replica_a.value(b"after-attack") == {7}, timeout=5, what="still serving")
    assert a.stats()["members_alive"] == 1


async def test_a_restarted_peer_is_reconnected_and_caught_up(
    pair: tuple[Gossiper, GrowOnlySets, Gossiper, GrowOnlySets],
) -> None:
    a, replica_a, b, _ = pair
    port = b.address[1]
    await b.stop()
    replica_a.add(b"while-away", 1)
    reborn, replica_reborn = tcp_gossiper("b", port=port, seed=a)
    await reborn.start()
    try:
        await wait_until(
            lambda: replica_reborn.value(b"while-away") == {1}, timeout=5, what="caught up after restart"
        )
        replica_reborn.add(b"after-restart", 2)
        await wait_until(lambda: replica_a.value(b"after-restart") == {2}, timeout=5, what="reconnected")
        await wait_until(
            lambda: [m.state.value for m in a.members()] == ["alive", "alive"], timeout=5, what="alive again"
        )
    finally:
        await reborn.stop()
    await b.start()  # the fixture stops it again


async def test_a_stalled_half_frame_is_dropped_after_the_frame_timeout() -> None:
    transport = TcpTransport(HOST, 0, max_frame_bytes=1 << 20, frame_timeout=0.2)
    received: list[bytes] = []
    await transport.start(received.append)
    try:
        assert await send_raw(transport.address, LENGTH_PREFIX.pack(100) + b"only part of it")
        assert received == []
    finally:
        await transport.stop()


async def test_inbound_connections_beyond_the_cap_are_refused() -> None:
    transport = TcpTransport(HOST, 0, max_frame_bytes=1 << 20, max_connections=2)
    await transport.start(lambda frame: None)
    connections = [await asyncio.open_connection(*transport.address) for _ in range(3)]
    try:
        await wait_until(
            lambda: transport.counters().get("connections_refused", 0) == 1, timeout=2, what="refusal"
        )
    finally:
        for _, writer in connections:
            writer.close()
        await transport.stop()


async def test_a_route_detours_or_cuts_each_frame_on_its_way_out() -> None:
    received: dict[str, list[bytes]] = {"b": [], "c": []}
    b = TcpTransport(HOST, 0, max_frame_bytes=1024)
    c = TcpTransport(HOST, 0, max_frame_bytes=1024)
    await b.start(received["b"].append)
    await c.start(received["c"].append)
    cut = False

    def route(source: tuple[str, int], destination: tuple[str, int]) -> tuple[str, int] | None:
        assert source == a.address
        return None if cut else c.address  # everything meant for b goes to c instead

    a = TcpTransport(HOST, 0, max_frame_bytes=1024, route=route)
    await a.start(lambda frame: None)
    try:
        frame = LENGTH_PREFIX.pack(40) + bytes(40)  # long enough to be a frame; its bytes go unread
        a.send(b.address, frame)
        await wait_until(lambda: received["c"] == [frame], timeout=5, what="the detoured frame")
        cut = True
        a.send(b.address, frame)
        assert a.counters()["frames_cut"] == 1
        await asyncio.sleep(0.1)
        assert received == {"b": [], "c": [frame]}
    finally:
        for transport in (a, b, c):
            await transport.stop()
