"""The like lane: single likes and unlikes answered without aiohttp's per-request machinery.

A like is the one request a like service takes thousands of times a second, and aiohttp's request
objects, router, middleware chain and response objects cost several times what the like itself does
(the store and the log record). So every connection to a node starts in a ``LikeLane``: a plain
``asyncio.Protocol`` that recognises ``PUT``/``DELETE /v1/items/{type}/{id}/likes/{user}`` in its
simplest, valid HTTP/1.1 form and answers it itself, through the same guard, causal tokens, store,
write levels and metrics as the aiohttp route (``node.http.api``), with the same bytes of JSON.

Anything else — another route or method, a body, ``Transfer-Encoding``, ``Expect``, HTTP/1.0, a
percent-encoded or invalid path, a query other than ``w=``, a header the lane does not read as aiohttp
would, a head over ``MAX_HEAD_BYTES`` — is not parsed any further: the connection is handed to
aiohttp's own protocol (``transport.set_protocol``) together with every byte not yet answered, and
stays there. The lane therefore accepts a strict subset of HTTP and never has to get an edge case
right: aiohttp answers all of them, errors included, exactly as it would without the lane.

Requests on one connection are answered in order, one at a time (pipelining works; a like awaiting its
fsync holds the next one). An idle connection is closed after ``IDLE_TIMEOUT`` seconds, as aiohttp's
keep-alive timeout does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import web

from node.durable.durability import WRITE_LEVELS, not_durable
from node.errors import INTERNAL_MESSAGE, DataDirError, RequestError, error_body
from node.http import causal
from node.http.writes import WRITES, Writes
from node.state.item import MAX_ID, NAME_PATTERN, ItemKey
from node.state.store import LikeResult

log = logging.getLogger(__name__)

#: A request head larger than this is left to aiohttp (its own limit is 8190 bytes a line).
MAX_HEAD_BYTES = 8192
#: Unanswered bytes buffered before the lane stops reading (a client pipelining far ahead).
MAX_BUFFERED_BYTES = 256 * 1024
#: Seconds a connection may sit idle between requests before it is closed (aiohttp's default: 75).
IDLE_TIMEOUT = 75.0
#: The route's name in metrics, as aiohttp's router names it.
ROUTE = "/v1/items/{type}/{id}/likes/{user}"
#: The like path, valid values only: anything else goes to aiohttp, which answers 404 or 422.
_REQUEST_LINE = re.compile(
    rb"(PUT|DELETE) /v1/items/(%s)/([0-9]{1,20})/likes/([0-9]{1,20})(?:\?w=(%s))? HTTP/1\.1(?=\r\n|$)"
    % (NAME_PATTERN.encode(), "|".join(WRITE_LEVELS).encode())
)
#: Header names the lane understands; any other header is ignored, as the route ignores it.
_LANE_HEADERS = frozenset({b"content-length", b"connection", b"authorization", b"likes-causal-token"})
#: Header names whose presence sends the request to aiohttp.
_HAND_OVER_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
#: Headers every client sends that the route never reads: skipped without a look.
_IGNORED_HEADERS = frozenset({b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language"})
#: A header name (RFC 9110 token), lowercased.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")


@dataclass
class Lane:
    """What every lane connection of one node shares: the node's parts and its open connections."""

    writes: Writes
    waiter: causal.CausalWaiter
    #: Makes aiohttp's protocol for a connection handed over (``web.Server.__call__``).
    fallback: Callable[[], asyncio.Protocol]
    connections: set[LikeLane] = field(default_factory=set)
    #: Requests the lane answered, and connections it handed to aiohttp (for tests and operators).
    answered: int = 0
    handed_over: int = 0
    _date: tuple[int, bytes] = (0, b"")

    def protocol(self) -> LikeLane:
        """A protocol for a new connection (the server's protocol factory)."""
        return LikeLane(self)

    def date(self) -> bytes:
        """The ``Date`` header's value, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode("ascii"))
        return self._date[1]

    def close_idle(self, now: float) -> None:
        """Close the connections idle for longer than ``IDLE_TIMEOUT``."""
        for connection in list(self.connections):
            if connection.idle_since is not None and now - connection.idle_since > IDLE_TIMEOUT:
                connection.close()

    async def close(self) -> None:
        """Let answers in progress finish, then close every lane connection (at shutdown)."""
        busy: list[asyncio.Future[Any]] = [c.serving for c in self.connections if c.serving is not None]
        if busy:
            await asyncio.wait(busy, timeout=5.0)
        for connection in list(self.connections):
            connection.close()


@dataclass(slots=True)
class LikeRequest:
    """One like or unlike the lane answers, as read from its head."""

    liking: bool
    key: ItemKey
    user: int
    level: str | None
    close: bool
    authorization: str | None
    token: str | None


class LikeLane(asyncio.Protocol):
    """One connection: answers likes itself until a request needs aiohttp, then hands it over.

    A like at the default write level without a causal token (nearly all of them) is answered
    without a coroutine: applied at once, then written out from a callback on its log record's
    future. A token to wait for or a write level above 1 takes a task (``_answer_later``)."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._buffer = bytearray()
        self._paused = False
        #: What the request being answered waits for (its log record or its task), if anything.
        self.serving: asyncio.Future[Any] | None = None
        #: When the connection last became idle (loop time), None while a request is in progress.
        self.idle_since: float | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self._transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) and peer else None
        self.idle_since = asyncio.get_running_loop().time()
        self._lane.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lane.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.serving is None:
            self._answer_buffered()
        if len(self._buffer) > MAX_BUFFERED_BYTES and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # the transport closes (after what is already written), as aiohttp's does

    def close(self) -> None:
        """Close the connection (after what is already written)."""
        if self._transport is not None:
            self._transport.close()

    # -- answering ---------------------------------------------------------------------------------

    def _answer_buffered(self) -> None:
        """Answer the complete requests buffered, in order, until one has to wait; hand the
        connection over at the first request that is not the lane's."""
        self.idle_since = None
        while self.serving is None and self._transport is not None and not self._transport.is_closing():
            end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._hand_over()
                break
            request = _read_head(bytes(self._buffer[:end]))
            if request is None:
                self._hand_over()
                return
            del self._buffer[: end + 4]
            self._answer(request)
        if self.serving is None and self._transport is not None:
            self.idle_since = asyncio.get_running_loop().time()
            if self._paused:
                self._paused = False
                self._transport.resume_reading()

    def _answer(self, request: LikeRequest) -> None:
        started = time.perf_counter()
        if request.token is not None or request.level not in (None, "1"):
            task = asyncio.get_running_loop().create_task(self._answer_later(request, started))
            self.serving = task
            task.add_done_callback(self._resume)
            return
        try:
            self._admit(request)
            result, produced = self._apply(request)
            durable = self._lane.writes.commit_local()
        except Exception as exc:
            self._reply_failure(request, started, exc)
            return
        if durable is None:
            self._reply(request, started, 200, _like_body(request, result), produced)
            return
        self.serving = durable
        durable.add_done_callback(lambda _: self._committed(request, started, durable, result, produced))

    def _committed(
        self,
        request: LikeRequest,
        started: float,
        durable: asyncio.Future[None],
        result: LikeResult,
        produced: tuple[causal.TokenEntry, ...],
    ) -> None:
        """The like's log record is durable (or failed): answer, then go on with the next request."""
        failure = None if durable.cancelled() else durable.exception()
        if failure is None:
            self._reply(request, started, 200, _like_body(request, result), produced)
        else:
            exc = not_durable(failure) if isinstance(failure, DataDirError) else failure
            self._reply_failure(request, started, exc)
        self._resume(durable)

    def _resume(self, _: asyncio.Future[Any]) -> None:
        self.serving = None
        self._answer_buffered()

    async def _answer_later(self, request: LikeRequest, started: float) -> None:
        """The same answer for a like that waits: for its causal token, or for its peers."""
        try:
            self._admit(request)
            incoming = None
            if request.token is not None:
                incoming = causal.decode_token(request.token)
                await self._lane.waiter.wait(incoming)
            writes = self._lane.writes
            level = writes.level(request.level)
            result, produced = self._apply(request)
            await writes.commit(level, (request.key,))
        except Exception as exc:
            self._reply_failure(request, started, exc)
            return
        self._reply(request, started, 200, _like_body(request, result), produced, incoming)

    def _admit(self, request: LikeRequest) -> None:
        """The guard middleware's checks: the client's rate, then the bearer token."""
        guard = self._lane.writes.guard
        token = guard.authenticate(request.authorization) if guard.tokens_required else None
        guard.limit_client(token, self._remote)
        if guard.tokens_required and token is None:
            guard.require_token(request.authorization, token)

    def _apply(self, request: LikeRequest) -> tuple[LikeResult, tuple[causal.TokenEntry, ...]]:
        """The route's write (``node.http.writes``): the user's rate, then the like or unlike."""
        return self._lane.writes.set_like(request.key, request.user, liking=request.liking)

    def _reply_failure(self, request: LikeRequest, started: float, exc: BaseException) -> None:
        """The JSON error of a rejected or failed like (a 500, logged and counted, if unexpected)."""
        if isinstance(exc, RequestError):
            body = error_body(exc.code, exc.message)
            self._reply(request, started, exc.status, body, headers=exc.headers)
            return
        log.error("unexpected error answering a like", exc_info=exc)
        self._lane.writes.metrics.internal_errors.inc()
        self._reply(request, started, 500, error_body("internal", INTERNAL_MESSAGE))

    def _reply(
        self,
        request: LikeRequest,
        started: float,
        status: int,
        body: bytes,
        produced: tuple[causal.TokenEntry, ...] | None = None,
        incoming: causal.Token | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Count the request and write its answer (with the answer's causal token after a write)."""
        lane = self._lane
        lane.writes.metrics.count_request(
            "PUT" if request.liking else "DELETE", ROUTE, status, time.perf_counter() - started
        )
        lane.answered += 1
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        lines = [
            _STATUS_LINES.get(status) or _status_line(status),
            b"Content-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\n"
            % (len(body), lane.date()),
        ]
        if produced is not None:
            token = causal.answer_token(request.token, incoming, produced)
            if token is not None:
                lines.append(_TOKEN_HEADER % token.encode("ascii"))
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if request.close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(body)
        transport.write(b"".join(lines))
        if request.close:
            transport.close()

    def _hand_over(self) -> None:
        """Give the connection, with every byte not yet answered, to aiohttp's protocol for good."""
        transport = self._transport
        if transport is None:
            return
        lane = self._lane
        lane.connections.discard(self)
        lane.handed_over += 1
        protocol = lane.fallback()
        self._transport = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        if self._buffer:
            protocol.data_received(bytes(self._buffer))
        self._buffer.clear()


def _like_body(request: LikeRequest, result: LikeResult) -> bytes:
    return orjson.dumps({"liked": request.liking, "changed": result.changed, "count": result.count})


_TOKEN_HEADER = causal.HEADER.encode("ascii") + b": %s\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("ascii"))


_STATUS_LINES = {status.value: _status_line(status.value) for status in HTTPStatus}


def _read_head(head: bytes) -> LikeRequest | None:
    """The like a request head asks for, or None when the request is not one the lane answers."""
    match = _REQUEST_LINE.match(head)
    if match is None:
        return None
    method, kind, raw_id, raw_user, level = match.groups()
    content_id, user = int(raw_id), int(raw_user)
    if content_id > MAX_ID or user > MAX_ID:
        return None
    rest = head[match.end() :]
    fields = _read_headers(rest) if rest else _NO_HEADERS
    if fields is None:
        return None
    close, authorization, token = fields
    return LikeRequest(
        liking=method == b"PUT",
        key=ItemKey(kind.decode("ascii"), content_id),
        user=user,
        level=None if level is None else level.decode("ascii"),
        close=close,
        authorization=authorization,
        token=token,
    )


#: What ``_read_headers`` reads: ``Connection: close``, the ``Authorization`` and causal token values.
HeaderFields = tuple[bool, str | None, str | None]
_NO_HEADERS: HeaderFields = (False, None, None)


@functools.lru_cache(maxsize=256)
def _read_headers(rest: bytes) -> HeaderFields | None:
    """The header fields that matter to a like; None if aiohttp should read the headers: a
    malformed, folded or repeated line, a header the lane does not handle, a value it cannot read.
    Remembered: a client sends the same headers with every request on its connections."""
    lines = rest.count(b"\n")
    if rest.count(b"\r\n") != lines or rest.count(b"\r") != lines or b"\x00" in rest:
        return None
    close, authorization, token = _NO_HEADERS
    seen = set()
    for line in rest[2:].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        name = name.lower()
        if name in _IGNORED_HEADERS:
            continue
        if not colon or not _TOKEN.fullmatch(name) or name in _HAND_OVER_HEADERS:
            return None
        if name not in _LANE_HEADERS:
            continue
        if name in seen or not value.isascii():
            return None
        seen.add(name)
        value = value.strip(b" \t")
        if name == b"content-length":
            if value != b"0":
                return None
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if tokens - {b"close", b"keep-alive"}:
                return None
            close = b"close" in tokens
        elif name == b"authorization":
            authorization = value.decode("ascii")
        else:
            token = value.decode("ascii") or None
    return close, authorization, token


class LaneSite(web.BaseSite):
    """A TCP site whose connections start in the like lane and move to ``runner``'s aiohttp server
    when a request is not a like."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner)
        assert runner.server is not None, "set the runner up first"
        app = runner.app
        self.lane = Lane(writes=app[WRITES], waiter=app[causal.WAITER], fallback=runner.server)
        self._host, self._port = host, port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The port bound (the one asked for until started; then the real one, if 0 was asked)."""
        sockets = getattr(self._server, "sockets", None)  # an asyncio.Server's, once started
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.lane.protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def stop(self) -> None:
        """Stop accepting, let the likes in progress answer, close the lane's connections."""
        if self._server is not None:
            self._server.close()
        await self.lane.close()
        await super().stop()
