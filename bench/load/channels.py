"""Connections a worker sends its requests on: the raw keep-alive HTTP/1.1 client, and ``aiohttp``'s
for cross-checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import aiohttp

JSON_HEADERS = {"Content-Type": "application/json"}


class AiohttpChannel:
    """One connection's worth of an ``aiohttp`` session (the session's pool holds the sockets)."""

    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client = client
        self.url = url

    async def open(self) -> None:
        async with self.client.get(f"{self.url}/healthz") as response:
            await response.read()

    async def send(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        headers = JSON_HEADERS if body else None
        async with self.client.request(
            method.decode(), self.url + path, data=body or None, headers=headers
        ) as response:
            return response.status, await response.read()

    def expire(self, now: float, timeout: float) -> None:
        """aiohttp enforces its own timeout."""

    def close(self) -> None:
        """The session closes the sockets."""


class RawChannel(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this load: a
    pre-built request head, one request at a time (no pipelining), and a response read by its
    ``Content-Length``. It costs the client several times less CPU per request than ``aiohttp``'s
    client, which matters when one load core must outrun one server core. A broken or timed-out
    connection fails its request and is opened again for the next one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.path not in ("", "/"):
            raise ValueError(f"the raw client speaks plain http to a host:port, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        # The headers curl sends: a realistic minimum, the same for every system measured.
        self.head = (
            f" HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: likes-bench/1\r\nAccept: */*\r\n"
        ).encode()
        self.empty = self.head + b"Content-Length: 0\r\n\r\n"
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: Hears how the request in flight ended: ``(status, body)`` or the exception that ended it.
        self.answer: Callable[[Outcome], None] | None = None
        self.sent_at = 0.0
        self.timeout = 10.0

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.buffer.clear()
        async with asyncio.timeout(self.timeout):
            await loop.create_connection(lambda: self, self.host, self.port)

    def submit(self, method: bytes, path: str, body: bytes, answer: Callable[[Outcome], None]) -> None:
        """Write a request on the open connection; ``answer`` hears how it ended (from a callback:
        no task or future per request, which is most of what an open-loop client spends)."""
        assert self.transport is not None
        self.answer = answer
        self.sent_at = time.monotonic()
        start = method + b" " + path.encode()
        if body:
            length = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.transport.write(start + self.head + length + body)
        else:
            self.transport.write(start + self.empty)

    async def send(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        if not self.usable:
            await self.open()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def answer(outcome: Outcome) -> None:
            if not future.done():  # not cancelled meanwhile
                future.set_result(outcome)

        self.submit(method, path, body, answer)
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _finish(self, outcome: Outcome) -> None:
        answer, self.answer = self.answer, None
        if answer is not None:
            answer(outcome)

    def expire(self, now: float, timeout: float) -> None:
        """Fail a request outstanding for longer than ``timeout`` and drop its connection."""
        if self.answer is not None and now - self.sent_at > timeout:
            if self.transport is not None:
                self.transport.abort()
            self._finish(TimeoutError(f"no answer within {timeout} s"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._finish(ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answer is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            if self.transport is not None:
                self.transport.abort()
            self._finish(ValueError("a response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < total:
            return
        status, body = int(self.buffer[9:12]), bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self._finish((status, body))


#: How a raw request ended: ``(status, body)``, or the exception that ended it.
Outcome = tuple[int, bytes] | BaseException


Channel = AiohttpChannel | RawChannel
