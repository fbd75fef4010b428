"""A loopback TCP proxy that a test can cut and restore, to stage server outages without root.

Route a client through ``TcpProxy`` instead of straight to its server, then ``cut()`` the line:

- ``mode="reset"``: every connection is reset (RST) and new ones are accepted and reset at once,
  as when a server restarts or a firewall rejects;
- ``mode="blackhole"``: every connection goes silent (nothing is forwarded either way, nothing is
  closed) and new ones are accepted and then ignored, as in a partition: only the client's own
  timeouts can save it.

``restore()`` forwards new connections again (connections held in a blackhole are reset, as a
partition that heals leaves them desynchronised). Every connection is served by tasks the proxy
owns; ``stop()`` cancels and awaits them all.

``FrameProxy`` sits in front of a node's gossip port instead and mangles whole frames: drops,
duplicates, reorders, delays and replays them (the fault harness, ``bench.faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Literal, Self

CutMode = Literal["reset", "blackhole"]
#: The length prefix of a gossip frame (``gossip.wire``): big-endian length of what follows.
LENGTH = struct.Struct(">I")


class _LoopbackServer:
    """A listener on a free loopback port with one task per connection: start, stop, ``async with``."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every connection, and wait for every task to end."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._reset_connections()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        raise NotImplementedError

    def _reset_connections(self) -> None:
        raise NotImplementedError


class TcpProxy(_LoopbackServer):
    """Forwards 127.0.0.1:<port> to a target, until cut."""

    def __init__(self, target_host: str, target_port: int, *, connect_timeout: float = 2.0) -> None:
        super().__init__()  # one task per accepted connection: it dials the target, pumps both ways
        self.target = (target_host, target_port)
        self._connect_timeout = connect_timeout
        self._mode: CutMode | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._upstreams: set[asyncio.StreamWriter] = set()
        #: Bytes forwarded from clients to the target so far (to cut in the middle of a request).
        self.forwarded = 0

    @property
    def connections(self) -> int:
        """Client connections open right now (forwarded or held)."""
        return len(self._clients)

    def cut(self, mode: CutMode = "reset") -> None:
        """Break the line: reset or silence every connection, and treat new ones the same way."""
        self._mode = mode
        if mode == "reset":
            _reset_all(self._clients)
        for task in list(self._tasks):
            task.cancel()  # closes the upstream side; a blackholed client side stays open, unanswered

    def restore(self) -> None:
        """Forward new connections again; connections held silent are reset."""
        if self._mode == "blackhole":
            _reset_all(self._clients)
        self._mode = None

    def _reset_connections(self) -> None:
        _reset_all(self._clients)
        _reset_all(self._upstreams)

    # -- connections -------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            _reset(writer)
            return
        self._clients.add(writer)
        if self._mode == "blackhole":
            return  # held open, never read nor answered, until restore() or stop()
        # Our own task, not this handler's: asyncio logs a stream handler task that gets cancelled.
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(reader, writer)
        finally:
            if self._mode != "blackhole":
                self._clients.discard(writer)
                _reset(writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Dial the target and pump both ways until both sides are done or one fails."""
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), self._connect_timeout
            )
        except (OSError, TimeoutError):
            return
        self._upstreams.add(up_writer)
        try:
            async with asyncio.TaskGroup() as pumps:  # one side failing stops the other
                pumps.create_task(self._pump(reader, up_writer, count=True))
                pumps.create_task(self._pump(up_reader, writer, count=False))
        except* OSError:
            pass  # a side was reset: the connection is over either way
        finally:
            self._upstreams.discard(up_writer)
            up_writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, count: bool) -> None:
        """Copy one direction until EOF, then half-close the other side."""
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
            if count:
                self.forwarded += len(data)
        if sink.can_write_eof():
            sink.write_eof()


def _reset_all(writers: set[asyncio.StreamWriter]) -> None:
    for writer in list(writers):
        _reset(writer)
    writers.clear()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, so the peer sees a reset connection at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(frozen=True)
class Mangling:
    """What a ``FrameProxy`` does to each frame, as probabilities (each drawn independently)."""

    #: The frame is never forwarded.
    drop: float = 0.0
    #: The frame is forwarded twice (the copy with its own delay).
    duplicate: float = 0.0
    #: The frame is held back up to ``max_delay`` seconds, so frames sent after it overtake it.
    reorder: float = 0.0
    #: After the frame, an older frame this proxy forwarded before is sent again.
    replay: float = 0.0
    max_delay: float = 0.03


class FrameProxy(_LoopbackServer):
    """Forwards length-prefixed gossip frames to a target, dropping, duplicating, reordering, delaying
    and replaying them: frame-aware, so the receiver sees whole (authentic) frames in a bad order
    rather than garbage, which is what a lossy network and an active replayer produce after TCP.

    Gossip connections carry frames one way only; whatever the target writes back is passed through
    unchanged. ``counters`` counts frames seen, dropped, duplicated, reordered and replayed.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        mangling: Mangling | None = None,
        rng: random.Random | None = None,
        max_frame_bytes: int = 8 * 1024 * 1024,
        history: int = 512,
    ) -> None:
        super().__init__()
        self.target = (target_host, target_port)
        self.mangling = mangling or Mangling()
        self.counters: Counter[str] = Counter(frames=0, dropped=0, duplicated=0, reordered=0, replayed=0)
        self._rng = rng or random.Random()
        self._max_frame_bytes = max_frame_bytes
        self._history: deque[bytes] = deque(maxlen=history)
        self._writers: set[asyncio.StreamWriter] = set()

    def _reset_connections(self) -> None:
        _reset_all(self._writers)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 2.0)
        except (OSError, TimeoutError):
            self._writers.discard(writer)
            _reset(writer)
            return
        self._writers.add(up_writer)
        outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._frames_in(reader, outgoing))
                pumps.create_task(self._frames_out(outgoing, up_writer))
                pumps.create_task(self._pass_back(up_reader, writer))
        except* (OSError, asyncio.IncompleteReadError, ValueError):
            pass  # a side went away or sent garbage: the connection is over
        finally:
            for side in (writer, up_writer):
                self._writers.discard(side)
                _reset(side)

    async def _frames_in(self, reader: asyncio.StreamReader, outgoing: asyncio.Queue[bytes | None]) -> None:
        """Read whole frames and schedule each one's (mangled) delivery."""
        loop = asyncio.get_running_loop()
        m = self.mangling
        while prefix := await reader.read(LENGTH.size):
            prefix += await reader.readexactly(LENGTH.size - len(prefix))
            (length,) = LENGTH.unpack(prefix)
            if length + LENGTH.size > self._max_frame_bytes:
                raise ValueError("oversized frame")
            frame = prefix + await reader.readexactly(length)
            self.counters["frames"] += 1
            m = self.mangling
            rng = self._rng
            if rng.random() < m.drop:
                self.counters["dropped"] += 1
            else:
                copies = 1
                if rng.random() < m.duplicate:
                    self.counters["duplicated"] += 1
                    copies = 2
                for _ in range(copies):
                    if rng.random() < m.reorder:
                        self.counters["reordered"] += 1
                        loop.call_later(rng.uniform(0.001, m.max_delay), outgoing.put_nowait, frame)
                    else:
                        outgoing.put_nowait(frame)
            if self._history and rng.random() < m.replay:
                self.counters["replayed"] += 1
                outgoing.put_nowait(rng.choice(self._history))
            self._history.append(frame)
        await asyncio.sleep(m.max_delay)  # let held-back frames out before the end
        outgoing.put_nowait(None)

    @staticmethod
    async def _frames_out(outgoing: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter) -> None:
        while (frame := await outgoing.get()) is not None:
            writer.write(frame)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    @staticmethod
    async def _pass_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
