"""``GET /v1/events``: live like counts as Server-Sent Events, for the page at ``GET /``.

A browser subscribes to a few items (``?item=demo:1&item=demo:2``) and is sent their counts at once,
then every change, whichever node the like arrived at: gossip merges it into this node's store and the
stream reports it. The like hot path is untouched: instead of PUT/DELETE notifying anyone, one poller
per node reads ``LikeStore.count`` (a dict lookup) of the items watched by any stream every
``interval`` while at least one stream is open, and wakes only the streams whose items changed. Each
stream then sends the counts that differ from what it last sent, so a burst of likes becomes one event.

Bounded: at most ``max_streams`` open streams per node (429 ``too_many_streams`` past it) and
``max_items`` items per stream (422); a stream ends after ``lifetime`` seconds (``EventSource``
reconnects by itself, ``retry`` below) or when the node shuts down (``on_shutdown``, so a node with
open streams still stops at once). A comment every ``keepalive`` seconds finds dead connections.

A client that does not accept ``text/event-stream`` (``curl``, a fuzzer) gets the current counts once
as JSON instead of a stream that never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from node.errors import InvalidValue, MalformedRequest, TooManyRequests
from node.state.item import ITEM_REF, MAX_ID, ItemKey
from node.state.store import LikeStore

log = logging.getLogger(__name__)

#: ``type:id``, the item syntax of ``after`` cursors too.
_ITEM = ITEM_REF
#: How long the browser waits before reconnecting a dropped stream, in milliseconds.
RECONNECT_MS = 1000
#: The query parameter naming an item; repeated for several.
ITEM_PARAM = "item"


class TooManyStreams(TooManyRequests):
    """The node already serves ``max_streams`` streams; try again later."""

    code = "too_many_streams"


@dataclass(eq=False)
class Stream:
    """One open event stream: the items it watches and the counts it has sent."""

    keys: tuple[ItemKey, ...]
    transport: asyncio.BaseTransport | None
    sent: dict[ItemKey, int] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def gone(self) -> bool:
        """The client hung up (seen without writing to it)."""
        return self.transport is None or self.transport.is_closing()


class LiveHub:
    """The open streams of one node and the poller that tells them about changed counts."""

    def __init__(
        self,
        store: LikeStore,
        node_name: str,
        *,
        interval: float = 0.1,
        max_streams: int = 256,
        max_items: int = 32,
        keepalive: float = 15.0,
        lifetime: float = 300.0,
    ) -> None:
        self.store = store
        self.node_name = node_name
        self.interval = interval
        self.max_streams = max_streams
        self.max_items = max_items
        self.keepalive = keepalive
        self.lifetime = lifetime
        self._streams: set[Stream] = set()
        #: item -> the streams watching it; its keys are what the poller reads.
        self._watchers: dict[ItemKey, set[Stream]] = {}
        #: item -> its count when the poller last looked.
        self._seen: dict[ItemKey, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def polling(self) -> bool:
        """Whether the poller runs: only while a stream is open."""
        return self._poller is not None and not self._poller.done()

    def parse_items(self, values: Sequence[str]) -> tuple[ItemKey, ...]:
        """The distinct items of the ``item`` parameters, in the order given; 400 when there is none,
        422 for a malformed one or more than ``max_items``."""
        if not values:
            raise MalformedRequest(f"name at least one item: ?{ITEM_PARAM}=type:id (repeat it for more)")
        if len(values) > self.max_items:
            raise InvalidValue(f"{ITEM_PARAM}: {len(values)} items exceed the limit of {self.max_items}")
        keys: dict[ItemKey, None] = {}
        for text in values:
            match = _ITEM.fullmatch(text)
            if match is None or int(match[2]) > MAX_ID:
                shown = text if len(text) <= 40 else text[:37] + "..."
                raise InvalidValue(f"{ITEM_PARAM}: {shown!r} is not an item (type:id)")
            keys[ItemKey(match[1], int(match[2]))] = None
        return tuple(keys)

    def counts(self, keys: Iterable[ItemKey]) -> dict[str, int]:
        """The counts of ``keys`` as the events carry them: ``{"type:id": count}``."""
        return {str(key): self.store.count(key) for key in keys}

    def open(self, keys: tuple[ItemKey, ...], transport: asyncio.BaseTransport | None) -> Stream:
        """Register a stream; 429 when the node serves ``max_streams`` already or is stopping."""
        if self._closing:
            raise TooManyStreams("the node is stopping; reconnect to another node", retry_after=1)
        if len(self._streams) >= self.max_streams:
            raise TooManyStreams(
                f"this node already serves {self.max_streams} event streams; try again later",
                retry_after=5,
            )
        stream = Stream(keys, transport)
        self._streams.add(stream)
        for key in keys:
            watchers = self._watchers.get(key)
            if watchers is None:
                watchers = self._watchers[key] = set()
                self._seen[key] = self.store.count(key)
            watchers.add(stream)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="live counts")
        return stream

    def close_stream(self, stream: Stream) -> None:
        """Forget a stream that has ended; an item nobody watches any more is no longer read."""
        self._streams.discard(stream)
        for key in stream.keys:
            watchers = self._watchers.get(key)
            if watchers is None:
                continue
            watchers.discard(stream)
            if not watchers:
                del self._watchers[key]
                del self._seen[key]

    def changes(self, stream: Stream) -> dict[str, int]:
        """The counts of the stream's items that differ from what it last sent; marks them sent."""
        changed: dict[str, int] = {}
        for key in stream.keys:
            count = self.store.count(key)
            if stream.sent.get(key) != count:
                stream.sent[key] = count
                changed[str(key)] = count
        return changed

    def poll_once(self) -> None:
        """One look at every watched count: wake the streams of the items that changed, and those
        whose client hung up so they end."""
        for key, watchers in self._watchers.items():
            count = self.store.count(key)
            if count != self._seen[key]:
                self._seen[key] = count
                for stream in watchers:
                    stream.wake.set()
        for stream in self._streams:
            if stream.gone():
                stream.wake.set()

    async def _poll(self) -> None:
        """Runs while any stream is open; the first stream to open after it ends starts it again."""
        while self._streams and not self._closing:
            self.poll_once()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """At shutdown: end every stream now, so the node does not wait out its shutdown timeout."""
        self._closing = True
        for stream in self._streams:
            stream.wake.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The stream of one request, from its first event to its end."""
        keys = self.parse_items(request.query.getall(ITEM_PARAM, []))
        if "text/event-stream" not in request.headers.get("Accept", ""):
            body = {"node": self.node_name, "counts": self.counts(keys)}
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        stream = self.open(keys, request.transport)
        response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        try:
            await response.prepare(request)
            hello = {"node": self.node_name, "items": [str(key) for key in keys]}
            await response.write(f"retry: {RECONNECT_MS}\n".encode() + _event("hello", hello))
            await self._send_changes(response, stream)
            await self._follow(response, stream)
            await response.write_eof()
        except ConnectionError:  # the client left (aiohttp's ClientConnectionResetError is one)
            pass
        finally:
            self.close_stream(stream)
        return response

    async def _follow(self, response: web.StreamResponse, stream: Stream) -> None:
        """Send changes as the poller reports them, keepalives in between, until the stream ends."""
        deadline = time.monotonic() + self.lifetime
        while not self._closing and not stream.gone():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(min(self.keepalive, left)):
                    await stream.wake.wait()
            except TimeoutError:
                if time.monotonic() < deadline:
                    await response.write(b": keepalive\n\n")
                continue
            stream.wake.clear()
            if not self._closing and not stream.gone():
                await self._send_changes(response, stream)

    async def _send_changes(self, response: web.StreamResponse, stream: Stream) -> None:
        changed = self.changes(stream)
        if changed:
            await response.write(_event("counts", {"counts": changed}))


def _event(name: str, data: object) -> bytes:
    """One SSE event; orjson never writes a newline, so the data is one line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


LIVE_HUB = web.AppKey("live_hub", LiveHub)
routes = web.RouteTableDef()


@routes.get("/v1/events", allow_head=False)
async def events(request: web.Request) -> web.StreamResponse:
    """Live counts of the items named by ``?item=type:id`` (SSE; JSON once for other clients)."""
    return await request.app[LIVE_HUB].serve(request)


def add_live_routes(app: web.Application, store: LikeStore, node_name: str) -> LiveHub:
    """Serve ``GET /v1/events`` from ``app``; its streams end when the app shuts down."""
    hub = app[LIVE_HUB] = LiveHub(store, node_name)
    app.add_routes(routes)
    app.on_shutdown.append(_close_streams)
    return hub


async def _close_streams(app: web.Application) -> None:
    await app[LIVE_HUB].close()
