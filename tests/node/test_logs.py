"""Structured logs: the formats themselves, and one line per event from the code that logs it.

The formatters are checked on records of their own; member changes on a ``Membership`` fed claims
directly; sink outages on a real Redis reached through a proxy the test cuts; and the whole of it on
real node processes, one of which is ``kill -9``-ed and started again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from redis.asyncio import Redis

from bench.tcpproxy import TcpProxy
from gossip import MemberInfo, MemberState
from gossip.messages import Members
from node.checkpoint import RedisSink
from node.checkpoint.checkpointer import Checkpointer
from node.process.logs import configure_logging, log_handler, resolve_format
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.gossip.test_membership import lone_membership
from tests.node.checkpoint.conftest import REDIS_URL
from tests.node.processes import NodeProcesses

ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD


def emit(log_format: str, *records: tuple[str, int, str, dict[str, Any]]) -> list[str]:
    """Log ``records`` (logger, level, message, extra) through a node's handler; the lines written."""
    stream = io.StringIO()
    handler = log_handler("n7", "json" if log_format == "json" else "text", stream)
    for name, level, message, extra in records:
        logger = logging.getLogger(name)
        record = logger.makeRecord(name, level, "f.py", 1, message, (), None, extra=extra)
        handler.handle(record)
    return stream.getvalue().splitlines()


def test_every_json_line_is_one_object_with_the_node_and_the_extra_fields() -> None:
    lines = emit(
        "json",
        ("gossip.membership", logging.INFO, "member n3 alive -> suspect", {"event": "member_changed"}),
        ("aiohttp.server", logging.ERROR, 'a "quoted"\nmessage on two lines', {}),
        ("node.checkpoint.checkpointer", logging.WARNING, "sink down", {"sink": "redis", "down_s": 1.5}),
    )
    assert len(lines) == 3  # a newline inside a message does not split its line
    entries = [orjson.loads(line) for line in lines]
    assert [entry["node"] for entry in entries] == ["n7"] * 3
    assert list(entries[0])[:5] == ["time", "level", "node", "logger", "message"]
    assert entries[0]["event"] == "member_changed" and entries[0]["level"] == "INFO"
    assert entries[1]["message"] == 'a "quoted"\nmessage on two lines'
    assert entries[2]["sink"] == "redis" and entries[2]["down_s"] == 1.5
    assert entries[2]["logger"] == "node.checkpoint.checkpointer"
    assert entries[0]["time"].endswith("Z") and entries[0]["time"][10] == "T"


def test_a_traceback_stays_inside_its_json_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs.traceback")
    logger.addHandler(log_handler("n7", "json", stream))
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("handling failed")
    finally:
        logger.handlers.clear()
    (line,) = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert entry["node"] == "n7" and "ValueError: boom" in entry["exc_info"]


def test_text_lines_carry_the_same_fields_for_a_human() -> None:
    (line,) = emit(
        "text",
        ("gossip.membership", logging.INFO, "member n3 left", {"member": "n3", "cause": "left the cluster"}),
    )
    assert " INFO    n7 gossip.membership: member n3 left member=n3 cause='left the cluster'" in line


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError):
        resolve_format("xml", io.StringIO())


CONFIGURED = """
import logging, warnings
from node.process.logs import configure_logging
assert configure_logging("n9") == "json"  # stderr is a pipe here
logging.getLogger("some.library").info("ready")
logging.getLogger("some.library").debug("not at the default level")
warnings.warn("deprecated thing", UserWarning, stacklevel=1)
"""


def test_a_configured_process_writes_every_record_and_warning_as_a_node_line() -> None:
    # A process of its own: configuring the root logger here would take pytest's capture away.
    result = subprocess.run(
        [sys.executable, "-c", CONFIGURED], capture_output=True, text=True, timeout=30, check=True
    )
    entries = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert [(e["node"], e["logger"], e["level"]) for e in entries] == [
        ("n9", "some.library", "INFO"),
        ("n9", "py.warnings", "WARNING"),
    ]
    assert "deprecated thing" in entries[1]["message"] and result.stdout == ""


# -- member changes: one line each, none for what changes nothing ----------------------------------


def member_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, str]]:
    return [
        (r.__dict__["member"], r.__dict__["change"], r.__dict__["old"], r.__dict__["new"])
        for r in caplog.records
        if r.__dict__.get("event") == "member_changed"
    ]


async def test_each_change_of_a_members_state_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gossip.membership")
    membership, _ = lone_membership()
    address = ("127.0.0.1", 9001)
    claims = [
        MemberInfo("peer", address, ALIVE, 0),  # joined
        MemberInfo("peer", address, ALIVE, 0),  # the same claim again: nothing
        MemberInfo("peer", address, SUSPECT, 0),  # suspect
        MemberInfo("peer", address, SUSPECT, 0),  # heard again from another member: nothing
        MemberInfo("peer", address, SUSPECT, 1),  # a newer incarnation, same state: nothing
        MemberInfo("peer", address, ALIVE, 1),  # alive@1 does not beat suspect@1: nothing
        MemberInfo("peer", address, DEAD, 1),  # dead
        MemberInfo("peer", address, ALIVE, 2),  # back
        MemberInfo("ghost", ("127.0.0.1", 9009), DEAD, 5),  # an unknown member's obituary: nothing
    ]
    try:
        for claim in claims:
            membership.apply(claim)
        farewell = MemberInfo("peer", address, DEAD, 2)
        membership.handle_members(Members(farewell, (farewell,), reply=False))
        membership.handle_members(Members(farewell, (farewell,), reply=False))  # a repeat: nothing
    finally:
        membership.close()
    assert member_lines(caplog) == [
        ("peer", "joined", "none", "alive"),
        ("peer", "suspect", "alive", "suspect"),
        ("peer", "dead", "suspect", "dead"),
        ("peer", "alive", "dead", "alive"),
        ("peer", "left", "alive", "dead"),
    ]


async def test_a_failed_probe_and_the_suspicion_timeout_say_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gossip.membership")
    membership, _ = lone_membership()
    target = MemberInfo("peer", ("127.0.0.1", 9001), ALIVE, 0)
    membership.apply(target)
    try:
        assert not await membership.probe(target)  # nobody answers the outbox
        deadline = time.monotonic() + 10
        while membership.members()[1].state is not DEAD and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        membership.close()
    causes = [r.__dict__["cause"] for r in caplog.records if r.__dict__.get("event") == "member_changed"]
    assert causes == ["gossip", "probe failed", "suspicion timed out"]


# -- sink outages: one line down, one line back, however many retries in between --------------------


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of the test Redis no other test uses; its keys are deleted afterwards."""
    prefix = f"likes-test-{secrets.token_hex(6)}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


async def test_a_sink_outage_is_one_line_down_and_one_line_back(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.checkpoint.checkpointer")
    parts = urlsplit(REDIS_URL)
    store = LikeStore("n1-test.1")
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        sink = RedisSink(f"redis://{proxy.host}:{proxy.port}{parts.path}", prefix=redis_prefix, timeout=0.3)
        checkpointer = Checkpointer(
            store,
            [sink],
            me="n1",
            live_members=lambda: ["n1"],
            interval=3600,
            batch_items=10,
            max_backoff=0.01,
            takeover_delay=0.0,
        )
        try:
            proxy.cut("reset")
            for user in range(5):
                store.like(ItemKey("post", 1), user)
                await checkpointer.tick(force=True)
            (lane,) = checkpointer.lanes
            assert lane.errors == 5 and lane.status().down
            proxy.restore()
            store.like(ItemKey("post", 1), 99)
            await checkpointer.tick(force=True)
            assert not lane.status().down and lane.status().pending_items == 0
            store.like(ItemKey("post", 2), 1)
            await checkpointer.tick(force=True)  # an ordinary write after recovery: no line
        finally:
            await checkpointer.close()
    events = [r for r in caplog.records if r.__dict__.get("event") in ("sink_down", "sink_up")]
    assert [r.__dict__["event"] for r in events] == ["sink_down", "sink_up"]
    down, up = events
    assert down.__dict__["sink"] == "redis" and down.levelno == logging.WARNING and down.__dict__["error"]
    assert up.__dict__["failed_attempts"] == 5 and up.__dict__["down_s"] > 0


# -- real node processes: start, stop, a member killed and back ------------------------------------


def log_entries(path: Path, node: str, start: int = 0) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` from byte ``start``; every one must be an object naming ``node``."""
    entries = []
    for line in path.read_bytes()[start:].decode().splitlines():
        entry = orjson.loads(line)  # not JSON: fails the test
        assert isinstance(entry, dict) and entry["node"] == node, line
        entries.append(entry)
    return entries


def events(entries: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]


@pytest.mark.cluster
def test_nodes_log_start_stop_and_a_killed_member_once_each(nodes: NodeProcesses) -> None:
    nodes.start_all()
    observers = ("n1", "n2")
    logs = {name: nodes.log(name) for name in nodes.names}
    at_kill = {name: logs[name].stat().st_size for name in observers}

    def state_of(observer: str, member: str) -> str | None:
        members = nodes.call(observer, "GET", "/v1/cluster")["members"]
        return next((m["state"] for m in members if m["name"] == member), None)

    nodes.kill("n3")
    nodes.eventually(lambda: all(state_of(o, "n3") == "dead" for o in observers), "n3 declared dead")
    time.sleep(1.0)  # more failed probes would have come and gone: they must not log again
    nodes.start("n3")
    nodes.eventually(lambda: all(state_of(o, "n3") == "alive" for o in observers), "n3 alive again")
    nodes.eventually(lambda: all(state_of("n3", o) == "alive" for o in observers), "n3 sees the others alive")
    time.sleep(0.5)
    during = {name: log_entries(logs[name], name, at_kill[name]) for name in observers}
    nodes.stop_all()

    for observer in observers:
        changes = [(e["old"], e["new"]) for e in events(during[observer], "member_changed", member="n3")]
        into_dead = [change for change in changes if change[1] == "dead"]
        into_suspect = [change for change in changes if change[1] == "suspect"]
        back = [change for change in changes if change[1] == "alive"]
        assert len(into_dead) == 1 and len(into_suspect) <= 1 and len(back) == 1, (observer, changes)
        assert back == [("dead", "alive")] and changes[-1] == ("dead", "alive"), (observer, changes)
        whole = log_entries(logs[observer], observer)
        assert len(events(whole, "node_started")) == 1 and len(events(whole, "node_stopped")) == 1
        assert whole[-1]["event"] == "node_stopped"
        started = events(whole, "node_started")[0]
        assert started["url"] == nodes.urls[observer] and started["logger"] == "node.process.server"
    # n3 ran twice: killed the first time (no stop line), stopped the second.
    victim = log_entries(logs["n3"], "n3")
    assert len(events(victim, "node_started")) == 2 and len(events(victim, "node_stopped")) == 1


LEVELLED = """
import logging, sys
from node.process.logs import configure_logging
configure_logging("n9", level=sys.argv[1])
for level in ("debug", "info", "warning", "error"):
    getattr(logging.getLogger("some.library"), level)(level)
"""


@pytest.mark.parametrize(
    ("level", "written"),
    [
        ("debug", ["DEBUG", "INFO", "WARNING", "ERROR"]),
        ("info", ["INFO", "WARNING", "ERROR"]),
        ("error", ["ERROR"]),
    ],
)
def test_the_log_level_is_the_least_severe_record_written(level: str, written: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LEVELLED, level], capture_output=True, text=True, timeout=30, check=True
    )
    assert [orjson.loads(line)["level"] for line in result.stderr.splitlines()] == written
    with pytest.raises(ValueError):
        configure_logging("n9", level="verbose")
