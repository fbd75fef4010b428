"""The write-ahead log: every accepted mutation is on disk before the client hears "ok".

A log record is a batch of ``(item key, delta payload)`` pairs, the same bytes gossip ships. Replay
therefore needs no ordering at all: deltas are joins, so applying a record twice, late, or after a
lost neighbour gives a state that anti-entropy completes. That is what makes recovery simple:

- ``wal-<segment>.log`` files hold records framed as ``length u32, crc32 u32, payload``; a record
  whose length or CRC does not check (a torn write at power loss, garbage appended) ends what is
  read of that segment. The damaged tail of the live segment is cut off and reported.
- **Group commit**: ``append`` buffers the record and returns a future; one writer thread writes
  every buffered record and fsyncs once, so all requests waiting when an fsync starts share it.
  While one fsync runs, the next group gathers, and the thread takes it the moment the fsync
  returns: the event loop only hears which futures to complete.
- **Snapshots** bound restart time and disk: ``rotate`` starts a new segment at an instant when the
  store holds everything logged so far; the caller then writes the store's states (possibly newer
  than that instant; replaying newer deltas over them is harmless), and ``install_snapshot`` makes
  it durable and deletes the segments it covers.

``fsync="never"`` acknowledges after the OS has the bytes, not the disk: fast and unsafe against
power loss, for benchmarks only. An optional durability mark (``mark_durable``), written after each
fsync, lets tests simulate power loss by cutting the log at the last fsynced offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack

from node.errors import DataDirError
from node.latency import DISK_BUCKETS, LatencyHistogram

log = logging.getLogger(__name__)

#: Record header: payload length and CRC-32 of the payload, both big-endian.
HEADER = struct.Struct(">II")
#: Largest record accepted on read; a length beyond it is corruption, not a record.
MAX_RECORD_BYTES = 256 * 1024 * 1024
SNAPSHOT = "snapshot"
SNAPSHOT_MAGIC = b"LIKESNAP\x01"
#: While the log is busy (the last group held at least ``BUSY_GROUP`` records), the writer waits this
#: long, in seconds, before taking the next group, so that one fsync and one hand-off between threads
#: serve more writes (PostgreSQL's ``commit_delay``). A lone write never waits.
COMMIT_DELAY = 0.001
BUSY_GROUP = 2
#: Durability mark (tests only): segment and offset of the last fsynced byte.
DURABLE_MARK = "wal.durable"
_SEGMENT = re.compile(r"wal-([0-9]{12})\.log")

Pair = tuple[bytes, bytes]
FsyncPolicy = Literal["always", "never"]


def encode_record(pairs: Iterable[Pair], packer: msgpack.Packer | None = None) -> bytes:
    """One framed record holding ``pairs`` (packed by ``packer``, a thread's own, if given)."""
    packer = packer or msgpack.Packer(use_bin_type=True)
    # A (key, value) tuple packs as the same two-element array a list does: no list per pair.
    payload: bytes = packer.pack(pairs if type(pairs) is list else list(pairs))
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes) -> tuple[list[list[Pair]], int]:
    """The records of ``data`` up to the first damaged one, and the offset where the good part ends."""
    records: list[list[Pair]] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        pairs = _pairs(payload)
        if pairs is None:
            break
        records.append(pairs)
        offset = end
    return records, offset


def _pairs(payload: bytes) -> list[Pair] | None:
    try:
        wire: Any = msgpack.unpackb(payload, raw=False)
    except Exception:  # a CRC collision on garbage: treat as damage like any other
        return None
    if type(wire) is not list:
        return None
    pairs: list[Pair] = []
    for entry in wire:
        if type(entry) is not list or len(entry) != 2 or not all(type(x) is bytes for x in entry):
            return None
        pairs.append((entry[0], entry[1]))
    return pairs


@dataclass
class Recovery:
    """What start-up found on disk."""

    #: Item states of the snapshot, then the deltas of every segment after it, in log order.
    snapshot: list[Pair] = field(default_factory=list)
    deltas: list[Pair] = field(default_factory=list)
    records: int = 0
    #: Damage found and cut: one line per damaged segment, for the start-up log.
    damage: list[str] = field(default_factory=list)


class WriteAheadLog:
    """The log of one node's data directory. ``open`` first, then ``start`` inside the event loop."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy = "always",
        mark_durable: bool = False,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.commit_delay = commit_delay
        self._mark_durable = mark_durable
        self._segment = 0
        self._file: Any = None
        self._offset = 0
        #: Records appended and not yet taken by the writer thread, and the futures waiting on them.
        self._buffer = bytearray()
        self._waiters: list[asyncio.Future[None]] = []
        #: The event loop's packer for records (``append`` runs only there).
        self._packer = msgpack.Packer(use_bin_type=True)
        #: Guards ``_buffer``, ``_waiters`` and ``_closing``; the writer thread waits on it.
        self._pending = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        #: Held while a group is written, so a rotation never closes a segment under a write.
        self._io = threading.Lock()
        self._failure: BaseException | None = None
        #: Counters for metrics: fsyncs, records, bytes; recent fsync latencies (the disk's part) and
        #: group commit latencies (append to durable, thread hand-offs included), in seconds.
        self.fsyncs = 0
        self.records = 0
        self.bytes_written = 0
        self.fsync_seconds: list[float] = []
        self.commit_seconds: list[float] = []
        #: Every fsync and group commit since start, bucketed for the ``/metrics`` histograms.
        self.fsync_latency = LatencyHistogram(DISK_BUCKETS)
        self.commit_latency = LatencyHistogram(DISK_BUCKETS)

    # -- start-up -------------------------------------------------------------------------------------

    def open(self) -> Recovery:
        """Read the snapshot and the segments after it, cut a damaged tail, open a fresh segment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        recovery = Recovery()
        covered = self._load_snapshot(recovery)
        segments = self._segments()
        for number in segments:
            path = self._path(number)
            if number <= covered:
                path.unlink(missing_ok=True)  # a snapshot install that died before cleaning up
                continue
            data = path.read_bytes()
            records, good = read_records(data)
            recovery.records += len(records)
            for pairs in records:
                recovery.deltas.extend(pairs)
            if good < len(data):
                recovery.damage.append(
                    f"{path.name}: cut {len(data) - good} damaged bytes after {len(records)} good records"
                )
                with open(path, "r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())
        # Never append after possibly damaged bytes: a fresh segment for this run.
        self._segment = max([covered, *segments], default=0) + 1
        self._open_segment()
        return recovery

    def _load_snapshot(self, recovery: Recovery) -> int:
        """Load the snapshot's states; the last segment number it covers (0 without one)."""
        path = self.directory / SNAPSHOT
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        magic = len(SNAPSHOT_MAGIC)
        if data[:magic] != SNAPSHOT_MAGIC or len(data) < magic + 8:
            raise DataDirError(f"{path}: not a snapshot of this version")
        covered = int.from_bytes(data[magic : magic + 8], "big")
        records, good = read_records(data[magic + 8 :])
        if good != len(data) - magic - 8:
            # Snapshots are renamed into place only once complete, so this is disk corruption.
            raise DataDirError(f"{path}: damaged snapshot (fails its checksum at byte {magic + 8 + good})")
        for pairs in records:
            recovery.snapshot.extend(pairs)
        return covered

    def _segments(self) -> list[int]:
        found = (_SEGMENT.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(int(m[1]) for m in found if m is not None)

    def _path(self, segment: int) -> Path:
        return self.directory / f"wal-{segment:012d}.log"

    def _open_segment(self) -> None:
        self._file = open(self._path(self._segment), "ab", buffering=0)  # noqa: SIM115  # kept open
        self._offset = self._file.tell()
        _fsync_directory(self.directory)

    # -- the writer thread -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread; call it inside the running event loop, which hears of each group."""
        self._loop = asyncio.get_running_loop()
        self._writer = threading.Thread(target=self._write_groups, name="wal writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        """Commit what is buffered, stop the writer thread, close the segment."""
        if self._writer is not None:
            await self.flush()
            with self._pending:
                self._closing = True
                self._pending.notify()
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, pairs: Iterable[Pair]) -> asyncio.Future[None]:
        """Log ``pairs`` as one record; the future completes once the record is durable."""
        if self._failure is not None:
            raise DataDirError(f"the write-ahead log failed: {self._failure}")
        assert self._loop is not None, "start() the log before appending"
        record = encode_record(pairs, self._packer)
        future = self._loop.create_future()
        with self._pending:
            self._buffer += record
            self._waiters.append(future)
            self._pending.notify()
        self.records += 1
        return future

    async def flush(self) -> None:
        """Wait until everything appended so far is durable (or has failed)."""
        if self._writer is None or self._failure is not None:
            return
        assert self._loop is not None
        marker = self._loop.create_future()  # groups complete in order: this one completes last
        with self._pending:
            self._waiters.append(marker)
            self._pending.notify()
        with contextlib.suppress(DataDirError):
            await marker

    def _write_groups(self) -> None:
        """The writer thread: take every record buffered, write and fsync them as one group, repeat.

        The next group is taken the moment an fsync returns, without waiting for the event loop, which
        meanwhile answers the requests of the group just made durable.
        """
        busy = False
        while True:
            if busy:
                time.sleep(self.commit_delay)
            with self._pending:
                while not self._waiters and not self._closing:
                    self._pending.wait()
                if not self._waiters:
                    return
                data, self._buffer = bytes(self._buffer), bytearray()
                waiters, self._waiters = self._waiters, []
            busy = len(waiters) >= BUSY_GROUP
            started = time.monotonic()
            error: DataDirError | None = None
            if self._failure is not None:
                error = DataDirError(f"the write-ahead log failed: {self._failure}")
            elif data:
                try:
                    with self._io:
                        self._write(data)
                except Exception as exc:  # a full or failing disk: refuse every write from now on
                    self._failure = exc
                    log.exception("write-ahead log failed; the node refuses writes from now on")
                    error = DataDirError(f"the write-ahead log failed: {exc}")
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                self._loop.call_soon_threadsafe(self._complete, waiters, error, started)

    def _complete(
        self, waiters: list[asyncio.Future[None]], error: DataDirError | None, started: float
    ) -> None:
        """In the event loop: answer a group's waiters."""
        elapsed = time.monotonic() - started
        self.commit_seconds.append(elapsed)
        del self.commit_seconds[:-256]
        self.commit_latency.observe(elapsed)
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _write(self, data: bytes) -> None:
        """Write a group and make it durable (in the writer thread, holding ``_io``)."""
        self._file.write(data)
        self._offset += len(data)
        self.bytes_written += len(data)
        if self.fsync == "always":
            started = time.perf_counter()
            os.fsync(self._file.fileno())
            elapsed = time.perf_counter() - started
            self.fsync_seconds.append(elapsed)
            del self.fsync_seconds[:-256]
            self.fsync_latency.observe(elapsed)
            self.fsyncs += 1
            if self._mark_durable:
                # One fixed-width pwrite: a kill lands before or after it, never halfway through.
                line = f"{self._path(self._segment).name} {self._offset:020d}\n".encode()
                fd = os.open(self.directory / DURABLE_MARK, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.pwrite(fd, line, 0)
                finally:
                    os.close(fd)

    # -- snapshots --------------------------------------------------------------------------------------

    async def rotate(self) -> int:
        """Send later appends to a new segment; the last segment number a snapshot must cover.

        Capture the store after this returns: everything logged so far is then in the store (writes
        are applied before they are logged). Records still buffered go to the new segment, and
        replaying them over the snapshot is harmless.
        """
        return await asyncio.to_thread(self._rotate)

    def _rotate(self) -> int:
        with self._io:  # never close a segment under a group being written
            covered = self._segment
            self._file.close()
            self._segment += 1
            self._open_segment()
            return covered

    def install_snapshot(self, covered: int, states: Iterator[list[Pair]]) -> int:
        """Write a snapshot of ``states`` (chunks of (key, state)) covering segments up to ``covered``,
        atomically, then delete those segments. Blocking: run it in a worker thread. Bytes written."""
        path = self.directory / SNAPSHOT
        temporary = self.directory / f".{SNAPSHOT}.tmp"
        written = 0
        with open(temporary, "wb") as handle:
            handle.write(SNAPSHOT_MAGIC + covered.to_bytes(8, "big"))
            for chunk in states:
                record = encode_record(chunk)
                handle.write(record)
                written += len(record)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(self.directory)
        for number in self._segments():
            if number <= covered:
                self._path(number).unlink(missing_ok=True)
        return written

    def segment_bytes(self) -> int:
        """Bytes in the log segments not yet covered by a snapshot (what a restart replays)."""
        return sum(self._path(n).stat().st_size for n in self._segments())


def _fsync_directory(directory: Path) -> None:
    """Make a created, renamed or deleted file name durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
