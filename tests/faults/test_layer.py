"""The fault layer itself: the gossip transport obeys the control file only when the test entry point
(``bench.testnode``) hands it the plan, production code reads no variable that could turn a hook on,
and the frame proxy delivers whole frames, mangled as asked."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import testnode
from bench.tcpproxy import LENGTH, FrameProxy, Mangling
from gossip import faults
from gossip.faults import FaultPlan
from gossip.tcp import TcpTransport

A, B, C = ("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)
ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, plan: object) -> None:
    path.write_text(json.dumps(plan))
    time.sleep(faults.RELOAD_INTERVAL * 1.5)  # the plan is re-read at most this often


def test_without_a_route_there_is_no_fault_layer() -> None:
    assert TcpTransport("127.0.0.1", 0, max_frame_bytes=1024)._route is None


@pytest.mark.parametrize("package", ["gossip", "node"])
def test_production_code_reads_no_test_variable(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        assert "LIKES_TEST" not in path.read_text(), f"{path.relative_to(ROOT)} names a test variable"


def test_the_test_entry_point_hands_likes_node_its_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def likes(argv: list[str], **hooks: Any) -> int:
        calls.append((argv, hooks))
        return 0

    monkeypatch.setattr(testnode.cli, "main", likes)
    plan = tmp_path / "faults.json"
    line = testnode.command(faults=plan, durable_mark=True)
    assert line[:3] == [sys.executable, "-m", "bench.testnode"] and line[-1] == "--"
    assert testnode.main([*line[3:], "--config", "c.yaml", "--name", "n1"]) == 0
    argv, hooks = calls.pop()
    assert argv == ["node", "--config", "c.yaml", "--name", "n1"]
    assert hooks["mark_durable"] is True and hooks["gossip_route"].__self__.path == plan
    assert testnode.main(["--", "--config", "c.yaml", "--name", "n1", "--log-format", "json"]) == 0
    argv, hooks = calls.pop()
    assert argv == ["node", "--config", "c.yaml", "--name", "n1", "--log-format", "json"]
    assert hooks == {"gossip_route": None, "mark_durable": False}


def test_the_plan_cuts_pairs_both_ways_reroutes_and_survives_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    plan = FaultPlan(path)
    assert plan.route(A, B) == B  # no file: no faults
    write(
        path,
        {"blocked": [["127.0.0.1:9001", "127.0.0.1:9002"]], "via": {"127.0.0.1:9003": "127.0.0.1:19003"}},
    )
    assert plan.route(A, B) is None and plan.route(B, A) is None
    assert plan.route(A, C) == ("127.0.0.1", 19003)
    assert plan.route(B, C) == ("127.0.0.1", 19003)
    path.write_text('{"blocked": [[')  # half written: the last good plan stands
    time.sleep(faults.RELOAD_INTERVAL * 1.5)
    assert plan.route(A, B) is None
    write(path, {})
    assert plan.route(A, B) == B and plan.route(A, C) == C


async def test_a_partitioned_transport_sends_nothing_and_heals(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    received: list[bytes] = []
    sender = TcpTransport("127.0.0.1", 0, max_frame_bytes=1024, route=FaultPlan(path).route)
    receiver = TcpTransport("127.0.0.1", 0, max_frame_bytes=1024)
    await receiver.start(received.append)
    await sender.start(lambda frame: None)
    try:
        frame = LENGTH.pack(40) + bytes(40)
        pair = [f"{h}:{p}" for h, p in (sender.address, receiver.address)]
        write(path, {"blocked": [pair]})
        sender.send(receiver.address, frame)
        await asyncio.sleep(0.2)
        assert received == [] and sender.counters()["frames_cut"] == 1
        write(path, {})
        sender.send(receiver.address, frame)
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert received == [frame]
    finally:
        await sender.stop()
        await receiver.stop()


async def test_the_frame_proxy_drops_duplicates_reorders_and_replays_whole_frames() -> None:
    got: list[bytes] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while prefix := await reader.readexactly(LENGTH.size):
                got.append(prefix + await reader.readexactly(LENGTH.unpack(prefix)[0]))
        except asyncio.IncompleteReadError:
            done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mangling = Mangling(drop=0.1, duplicate=0.25, reorder=0.25, replay=0.05, max_delay=0.01)
    sent = [LENGTH.pack(8) + i.to_bytes(8, "big") for i in range(1000)]
    async with FrameProxy("127.0.0.1", port, mangling=mangling, rng=random.Random(3)) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for frame in sent:
            writer.write(frame)
        await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 5)
        counters = dict(proxy.counters)
    server.close()
    assert counters["frames"] == 1000
    assert set(got) <= set(sent)  # whole, authentic frames only
    assert len(got) == 1000 - counters["dropped"] + counters["duplicated"] + counters["replayed"]
    assert 50 < counters["dropped"] < 150 and 180 < counters["duplicated"] < 320 and counters["replayed"] > 20
    assert got != sorted(got)  # some arrived out of order
