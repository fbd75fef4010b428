"""The production transport: length-prefixed frames over persistent asyncio TCP connections.

Each peer gets one outbound connection, owned by a writer task that drains a bounded queue, writes
every frame waiting in one go, and reconnects with exponential backoff when the connection breaks.
Frames are never retried: a frame queued while the peer is unreachable, or beyond the queue bound,
is dropped and counted (gossip repairs loss; a backlog of stale pings would only mislead).

Inbound connections are read frame by frame. A length prefix over ``max_frame_bytes`` is rejected
before the body is read; a frame the handler rejects (``FrameError``: bad MAC, garbage) is counted;
either closes that connection and nothing else. Idle and half-sent frames time out, and the number
of inbound connections is capped, so no client can pin memory or file descriptors for long.

An optional ``Route`` decides, frame by frame, where each goes: the seam through which a fault
harness cuts and detours gossip between real processes (``gossip.faults``). The transport never
builds one itself; a node gets one only from whoever starts it (``run_node``'s ``gossip_route``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping

from gossip.errors import FrameError
from gossip.transport import Address, FrameHandler
from gossip.wire import LENGTH_PREFIX, payload_length

log = logging.getLogger(__name__)

#: Where a frame from ``source`` (this transport) for ``destination`` goes: that address, another one
#: to detour through, or None to drop the frame (counted as ``frames_cut``).
Route = Callable[[Address, Address], Address | None]


class TcpTransport:
    """Best-effort frame delivery over TCP; see ``gossip.transport`` for the guarantees."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_frame_bytes: int,
        queue_frames: int = 4096,
        connect_timeout: float = 1.0,
        idle_timeout: float = 300.0,
        frame_timeout: float = 10.0,
        max_connections: int = 256,
        max_backoff: float = 1.0,
        route: Route | None = None,
    ) -> None:
        self._address: Address = (host, port)
        self._max_frame_bytes = max_frame_bytes
        self._queue_frames = queue_frames
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._max_connections = max_connections
        self._max_backoff = max_backoff
        self._counters: Counter[str] = Counter(frames_rejected=0, frames_dropped=0)
        self._handler: FrameHandler | None = None
        self._server: asyncio.Server | None = None
        self._outbound: dict[Address, _Outbound] = {}
        self._inbound: set[asyncio.Task[None]] = set()
        self._route = route

    @property
    def address(self) -> Address:
        """The listening address; the real port once started on port 0."""
        return self._address

    def counters(self) -> Mapping[str, int]:
        """frames_rejected, frames_dropped, connections_opened, connect_failures, connections_refused."""
        return dict(self._counters)

    async def start(self, handler: FrameHandler) -> None:
        """Listen on the configured address."""
        if self._server is not None:
            raise RuntimeError("transport already started")
        self._handler = handler
        host, port = self._address
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self._address = (host, int(bound[1]))

    async def stop(self, linger: float = 0.5) -> None:
        """Stop listening, give queued frames up to ``linger`` seconds to go out, close everything."""
        if self._server is not None:
            self._server.close()
        outbound = list(self._outbound.values())
        self._outbound.clear()
        if outbound:
            flushes = [asyncio.ensure_future(link.flush()) for link in outbound]
            await asyncio.wait(flushes, timeout=linger)
            for flush in flushes:
                flush.cancel()
        for link in outbound:
            await link.close()
        for task in list(self._inbound):
            task.cancel()
        if self._inbound:  # bounded: a reader that lost its cancellation must not hang shutdown
            await asyncio.wait(list(self._inbound), timeout=linger)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._handler = None

    def send(self, address: Address, frame: bytes) -> None:
        """Queue ``frame`` on the connection to ``address``; dropped when the queue is full."""
        if self._handler is None:
            self._counters["frames_dropped"] += 1
            return
        if self._route is not None:  # a fault harness's partition cuts the frame, a detour reroutes it
            routed = self._route(self._address, address)
            if routed is None:
                self._counters["frames_cut"] += 1
                return
            address = routed
        link = self._outbound.get(address)
        if link is None:
            link = self._outbound[address] = _Outbound(
                address,
                self._counters,
                queue_frames=self._queue_frames,
                connect_timeout=self._connect_timeout,
                write_timeout=self._frame_timeout,
                max_backoff=self._max_backoff,
            )
        link.enqueue(frame)

    # -- inbound ----------------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._inbound) >= self._max_connections:
            self._counters["connections_refused"] += 1
            writer.close()
            return
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._inbound.add(task)
        task.add_done_callback(self._inbound.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read frames until the peer closes, idles out, or sends something we reject."""
        try:
            while self._handler is not None:
                prefix = await asyncio.wait_for(reader.readexactly(LENGTH_PREFIX.size), self._idle_timeout)
                try:
                    length = payload_length(prefix, self._max_frame_bytes)
                except FrameError as exc:
                    self._reject(exc, writer)
                    return
                body = await asyncio.wait_for(reader.readexactly(length), self._frame_timeout)
                try:
                    self._handler(prefix + body)
                except FrameError as exc:
                    self._reject(exc, writer)
                    return
                except Exception:  # a handler bug must not take the listener down
                    log.exception("frame handler failed")
                    self._counters["handler_errors"] += 1
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass  # peer went away, or idled / stalled past its timeout
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _reject(self, exc: FrameError, writer: asyncio.StreamWriter) -> None:
        self._counters["frames_rejected"] += 1
        log.warning("rejected frame from %s: %s", writer.get_extra_info("peername"), exc)


class _Outbound:
    """The persistent connection to one peer and the queue in front of it."""

    def __init__(
        self,
        address: Address,
        counters: Counter[str],
        *,
        queue_frames: int,
        connect_timeout: float,
        write_timeout: float,
        max_backoff: float,
    ) -> None:
        self._address = address
        self._counters = counters
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(queue_frames)
        self._writer: asyncio.StreamWriter | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._task = asyncio.ensure_future(self._run())

    def enqueue(self, frame: bytes) -> None:
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._counters["frames_dropped"] += 1

    async def flush(self) -> None:
        """Return once everything queued so far has been written (or dropped)."""
        await self._queue.join()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task], timeout=1.0)  # bounded, even if the cancellation got lost
        self._disconnect()
        self._drop_queued()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            frame = await self._queue.get()
            if self._writer is None or self._writer.is_closing():
                if not await self._connect():
                    self._queue.task_done()
                    self._counters["frames_dropped"] += 1
                    self._drop_queued()
                    backoff = min(self._max_backoff, max(0.05, backoff * 2))
                    await asyncio.sleep(backoff)
                    continue
                backoff = 0.0
            assert self._writer is not None
            frames = [frame]
            while not self._queue.empty():
                frames.append(self._queue.get_nowait())
            try:
                self._writer.writelines(frames)
                await asyncio.wait_for(self._writer.drain(), self._write_timeout)
            except (ConnectionError, TimeoutError, OSError):
                self._counters["frames_dropped"] += len(frames)
                self._disconnect()
            finally:
                for _ in frames:
                    self._queue.task_done()

    async def _connect(self) -> bool:
        self._disconnect()
        host, port = self._address
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self._connect_timeout
            )
        except (ConnectionError, TimeoutError, OSError):
            self._counters["connect_failures"] += 1
            return False
        self._counters["connections_opened"] += 1
        self._writer = writer
        self._watcher = asyncio.ensure_future(self._watch(reader, writer))
        return True

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Notice the peer closing (it never writes on this connection), so the next frame reconnects."""
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(4096):
                pass  # discard: the peer has nothing to say here
        writer.close()

    def _disconnect(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._counters["frames_dropped"] += 1
