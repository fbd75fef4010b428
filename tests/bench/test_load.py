"""The raw client's open loop (``bench.load.dispatch.Dispatch``) against a scripted in-process server: every
request accounted for, latency counted from when a request was due (queueing behind busy
connections included), an unlike sent only after its like's answer, and bounded failures."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.load import NO_CONNECTION, LoadSpec, merge
from bench.load.worker import Worker

_PATH = re.compile(rb"(PUT|DELETE) (/v1/items/[a-z_]+/[0-9]+/likes/[0-9]+) HTTP/1\.1")


@dataclass
class Server:
    """Answers each like after ``delay`` seconds (None: never), one request at a time per connection,
    and remembers when each request arrived and when its answer left."""

    delay: float | None
    arrived: list[tuple[float, bytes, bytes]] = field(default_factory=list)
    answered: dict[tuple[bytes, bytes], float] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /healthz "):  # the aiohttp client's connection check
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    continue
                match = _PATH.match(head)
                assert match is not None, head
                method, path = match[1], match[2]
                self.arrived.append((time.monotonic(), method, path))
                if self.delay is None:
                    await asyncio.sleep(3600)
                await asyncio.sleep(self.delay)
                body = b'{"liked":%s,"changed":true,"count":1}' % (b"true" if method == b"PUT" else b"false")
                self.answered[method, path] = time.monotonic()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[asyncio.Server] = []

    async def start(delay: float | None) -> tuple[Server, str]:
        script = Server(delay)
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        servers.append(server)
        return script, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def open_loop(url: str, rate: float, seconds: float, connections: int, **fields: Any) -> LoadSpec:
    """An open-loop load of the scripted server, measured from the first request (no warm-up)."""
    fields.setdefault("timeout", 5.0)
    return LoadSpec(
        urls=(url,), mode="open", rate=rate, seconds=seconds, warmup=0.0, connections=connections, **fields
    )


async def run_open(spec: LoadSpec) -> dict[str, Any]:
    go = threading.Event()
    go.set()
    figures = await Worker(spec, 0).run(threading.Event(), go)
    return merge(spec, [figures])


async def test_latency_runs_from_the_due_time_through_the_queue(serve: Any) -> None:
    # 100/s offered, but two connections answering in 50 ms take 40/s: requests queue, and their
    # latency must include the wait, not just the 50 ms on the wire.
    script, url = await serve(0.05)
    spec = open_loop(url, 100.0, 0.5, 2)
    result = await run_open(spec)
    assert result["ok"] == result["requests"] == len(script.arrived) == 50
    assert result["error_count"] == 0 and result["changes_acked"] == 50
    latency = result["latency"]
    assert latency["count"] == 50
    assert latency["max_ms"] >= 600  # the last of 50 is due at 0.49 s and answered at about 1.25 s
    assert latency["p50_ms"] >= 200
    assert result["max_late_ms"] is not None and result["max_late_ms"] < 100  # dispatched on time


async def test_requests_are_dispatched_on_schedule_when_connections_are_free(serve: Any) -> None:
    script, url = await serve(0.0)
    spec = open_loop(url, 200.0, 0.5, 4)
    result = await run_open(spec)
    assert result["ok"] == 100 and result["error_count"] == 0
    times = [at for at, _, _ in script.arrived]
    assert 0.4 <= times[-1] - times[0] <= 0.6  # spread over the schedule, not sent in one burst
    assert result["latency"]["p99_ms"] < 50


async def test_an_unlike_is_sent_only_after_its_like_was_answered(serve: Any) -> None:
    # An unlike falls due 32 requests (80 ms) after its like, which is answered 200 ms after it was
    # sent: every unlike has to wait for its like's answer.
    script, url = await serve(0.2)
    spec = open_loop(url, 400.0, 0.75, 128, shape="zipf", items=5, unlike_share=0.3)
    result = await run_open(spec)
    unlikes = [(at, path) for at, method, path in script.arrived if method == b"DELETE"]
    assert unlikes and result["error_count"] == 0 and result["ok"] == len(script.arrived) == 300
    for at, path in unlikes:
        assert script.answered[b"PUT", path] <= at
    assert result["expected_counts"] == result["planned_counts"]


async def test_a_stalled_server_fails_requests_within_the_timeout(serve: Any) -> None:
    script, url = await serve(None)
    spec = open_loop(url, 100.0, 0.5, 2, timeout=0.5)
    started = time.monotonic()
    result = await run_open(spec)
    assert time.monotonic() - started < 5.0
    errors = result["errors"]
    assert result["ok"] == 0 and result["requests"] == 50 == sum(errors.values())
    assert errors.get("TimeoutError", 0) >= 2  # the requests on the wire
    assert errors.get(NO_CONNECTION, 0) >= 20  # the ones queued behind them
    assert 0 < len(script.arrived) <= result["sent_including_warmup"] < 50  # the queued were never sent


async def test_the_aiohttp_client_keeps_the_same_schedule(serve: Any) -> None:
    """The cross-check client (one task per request) follows the same schedule and accounting."""
    script, url = await serve(0.0)
    spec = open_loop(url, 200.0, 0.5, 4, client="aiohttp")
    result = await run_open(spec)
    assert result["ok"] == result["requests"] == len(script.arrived) == 100 and result["error_count"] == 0
    times = [at for at, _, _ in script.arrived]
    assert 0.4 <= times[-1] - times[0] <= 0.6
