"""The write-ahead log: every accepted mutation is on disk before the client hears "ok".

A log record is a batch of ``(item key, delta payload)`` pairs, the same bytes gossip ships. Replay
therefore needs no ordering at all: deltas are joins, so applying a record twice, late, or after a
lost neighbour gives a state that anti-entropy completes. That is what makes recovery simple:

- ``wal-<segment>.log`` files hold records framed by ``node.durable.logframe``: a sync marker and two CRCs
  (header, payload), so replay reads every intact record of a segment and skips damage in its
  middle (reported, kept on disk); a damaged tail (a torn write at power loss) is cut off and
  reported. Segments of the previous format (no marker) are still read.
- The item store (``node.durable.itemstore``) holds every item's state up to a segment it names;
  ``open`` replays only the segments after it, and ``drop_segments`` deletes the ones it covers once
  a flush committed. A ``snapshot`` file, what the previous version wrote instead of the item store,
  is still read (its states go into the store at the first flush, then it is deleted). A damaged one
  stops start-up (``DataDirError``) unless the operator passes ``discard_damaged_snapshot``: it is
  then renamed aside, never read again; what it held comes back from peers by anti-entropy.
- **Group commit**: ``append`` buffers the record and returns a future; one writer thread writes
  every buffered record and fsyncs once, so all requests waiting when an fsync starts share it.
  While one fsync runs, the next group gathers, and the thread takes it the moment the fsync
  returns: the event loop only hears which futures to complete.
- **Flushes** bound restart time and disk: ``rotate`` starts a new segment at an instant when the
  store holds everything logged so far; the caller then writes the changed items to the item store
  (possibly newer than that instant; replaying newer deltas over them is harmless) and, once that is
  durable, ``drop_segments`` deletes the segments it covers.

``fsync="never"`` acknowledges after the OS has the bytes, not the disk: fast and unsafe against
power loss, for benchmarks only. An optional durability mark (``mark_durable``), written after each
fsync, lets tests simulate power loss by cutting the log at the last fsynced offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack

from node.durable.logframe import (
    LOG_MAGIC,
    DamagedFile,
    encode_record,
    read_segment,
    read_snapshot,
)
from node.errors import DataDirError
from node.latency import DISK_BUCKETS, LatencyHistogram

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot"
#: The command-line option that lets a node start without its damaged snapshot (``node.process.cli``).
DISCARD_FLAG = "--discard-damaged"
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


@dataclass
class Recovery:
    """What start-up found on disk."""

    #: Item states of a previous version's snapshot file, then the deltas of every segment after
    #: what the item store and that snapshot cover, in log order.
    snapshot: list[Pair] = field(default_factory=list)
    deltas: list[Pair] = field(default_factory=list)
    records: int = 0
    #: Damage found: one line per damaged span skipped or cut, or snapshot discarded, for the log.
    damage: list[str] = field(default_factory=list)
    #: The snapshot was damaged and set aside: its states are in neither list above.
    snapshot_discarded: bool = False

    @property
    def clean(self) -> bool:
        """Nothing was cut, skipped or discarded: the disk gave back everything the node wrote."""
        return not self.damage and not self.snapshot_discarded


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
        #: Records appended and not yet taken by the writer thread, the futures waiting on them, and
        #: what to call, in order, once each is durable (before any of their futures completes).
        self._buffer = bytearray()
        self._waiters: list[asyncio.Future[None]] = []
        self._then: list[Callable[[], None] | None] = []
        #: Called on the event loop with the reason whenever a group fails (before its futures do).
        self.on_failure: Callable[[str], None] | None = None
        #: The event loop's packer for records (``append`` runs only there).
        self._packer = msgpack.Packer(use_bin_type=True)
        #: Guards ``_buffer``, ``_waiters`` and ``_closing``; the writer thread waits on it.
        self._pending = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        #: Held while a group is written, so a rotation never closes a segment under a write.
        self._io = threading.Lock()
        #: Set by the writer thread when a write or fsync fails: every later group fails until a probe
        #: (``recover``) succeeds in a new segment.
        self._failure: BaseException | None = None
        #: Bytes of the live segment known to be durable: a failed group is cut back to this.
        self._durable_offset = 0
        #: The future that hears the outcome of the probe in progress (``recover``; the loop's), and
        #: whether the writer thread has yet to take it (guarded by ``_pending``).
        self._probe: asyncio.Future[bool] | None = None
        self._probe_asked = False
        #: The log's health as the event loop sees it: why it refuses writes (None when it takes
        #: them), since when (wall clock), and how often it failed and recovered since start.
        self.failure: str | None = None
        self.failed_since: float | None = None
        self.failures = 0
        self.recoveries = 0
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

    def open(self, covered: int = 0, *, discard_damaged_snapshot: bool = False) -> Recovery:
        """Read every intact record of the segments after ``covered`` (the item store's) and after a
        previous version's snapshot, skipping damage and cutting a damaged tail, then open a fresh
        segment. A damaged snapshot raises DataDirError, or with ``discard_damaged_snapshot`` is set
        aside (the operator's call: its data then comes from peers)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        recovery = Recovery()
        covered = max(covered, self._load_snapshot(recovery, discard=discard_damaged_snapshot))
        segments = self._segments()
        for number in segments:
            path = self._path(number)
            if number <= covered:
                path.unlink(missing_ok=True)  # a flush that died before cleaning up
                continue
            scan = read_segment(path.read_bytes())
            recovery.records += len(scan.records)
            for pairs in scan.records:
                recovery.deltas.extend(pairs)
            tail = scan.tail
            for span in scan.damage:
                what = "cut" if span is tail else "skipped"
                line = f"{path.name}: {what} {span.length} damaged bytes at offset {span.offset}"
                recovery.damage.append(line)
            if tail is not None:
                # A torn last write is cut, so it is reported once. Damage in the middle stays on disk
                # for inspection, reported at each start until a flush covers its segment.
                with open(path, "r+b") as handle:
                    handle.truncate(tail.offset)
                    os.fsync(handle.fileno())
        # Never append after possibly damaged bytes: a fresh segment for this run.
        self._segment = max([covered, *segments], default=0) + 1
        self._open_segment()
        return recovery

    def _load_snapshot(self, recovery: Recovery, *, discard: bool) -> int:
        """Load the snapshot's states; the last segment number it covers (0 without one, or when a
        damaged one is discarded)."""
        path = self.directory / SNAPSHOT
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            covered, records = read_snapshot(data)
        except DamagedFile as exc:
            # Snapshots are renamed into place only once complete, so this is disk corruption. Only the
            # operator may decide to start without it: a node alone would lose what it held.
            if not discard:
                raise DataDirError(
                    f"{path}: {exc}. To start the node without it (set aside, not deleted; peers send "
                    f"its data back by anti-entropy, a node alone loses it), pass {DISCARD_FLAG} to "
                    "`likes node` or `likes up`"
                ) from None
            aside = self.directory / f"{SNAPSHOT}.damaged-{int(time.time())}"
            while aside.exists():
                aside = aside.with_name(aside.name + "+")
            os.replace(path, aside)
            _fsync_directory(self.directory)
            recovery.snapshot_discarded = True
            recovery.damage.append(f"{SNAPSHOT}: {exc}; discarded, kept aside as {aside.name}")
            return 0
        for pairs in records:
            recovery.snapshot.extend(pairs)
        return covered

    def _segments(self) -> list[int]:
        found = (_SEGMENT.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(int(m[1]) for m in found if m is not None)

    def _path(self, segment: int) -> Path:
        return self.directory / f"wal-{segment:012d}.log"

    def _open_segment(self) -> None:
        """Open the current segment for appending; a new one starts with its format's header (made
        durable by the first fsync of a record after it)."""
        self._file = open(self._path(self._segment), "ab", buffering=0)  # noqa: SIM115  # kept open
        if self._file.tell() == 0:
            _write_all(self._file.fileno(), LOG_MAGIC)
        self._offset = self._durable_offset = self._file.tell()
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

    def append(self, pairs: Iterable[Pair], then: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Log ``pairs`` as one record; the future completes once the record is durable, or fails with
        DataDirError if it could not be made durable. ``then`` is called on the event loop once the
        record is durable, in append order, before the future completes."""
        assert self._loop is not None, "start() the log before appending"
        record = encode_record(pairs, self._packer)
        future = self._loop.create_future()
        with self._pending:
            self._buffer += record
            self._waiters.append(future)
            self._then.append(then)
            self._pending.notify()
        self.records += 1
        return future

    async def flush(self) -> None:
        """Wait until everything appended so far is durable (or has failed)."""
        if self._writer is None:
            return
        assert self._loop is not None
        marker = self._loop.create_future()  # groups complete in order: this one completes last
        with self._pending:
            self._waiters.append(marker)
            self._then.append(None)
            self._pending.notify()
        with contextlib.suppress(DataDirError):
            await marker

    async def recover(self) -> bool:
        """Probe a failed log: in a new segment (after a failed fsync the old file's pages may be gone,
        so a later fsync of it proves nothing), write and fsync an empty record; True once the log
        takes writes again. Every record appended before the probe fails first."""
        if self._failure is None:
            return True
        assert self._loop is not None and self._writer is not None, "start() the log first"
        if self._probe is None:
            self._probe = self._loop.create_future()
            with self._pending:
                self._probe_asked = True
                self._pending.notify()
        return await asyncio.shield(self._probe)

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
                while not self._waiters and not self._closing and not self._probe_asked:
                    self._pending.wait()
                if not self._waiters and not self._probe_asked:
                    return
                data, self._buffer = bytes(self._buffer), bytearray()
                waiters, self._waiters = self._waiters, []
                then, self._then = self._then, []
                probe, self._probe_asked = self._probe_asked, False
            busy = len(waiters) >= BUSY_GROUP
            started = time.monotonic()
            error: str | None = None
            with self._io:  # held until the group is answered: a rotation's answer comes after it
                if self._failure is not None:
                    error = str(self._failure)
                elif data:
                    try:
                        self._write(data)
                    except Exception as exc:  # a full or failing disk: no write in the group is durable
                        self._fail(exc)
                        error = str(exc)
                if waiters:
                    self._answer(self._complete, waiters, then, error, started)
                if probe:
                    self._answer(self._probed, self._try_recovery())

    def _answer(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _fail(self, exc: BaseException) -> None:
        """A group failed (writer thread, holding ``_io``): refuse every group until a probe succeeds,
        and cut the segment back to its last durable byte so a restart never replays the group."""
        self._failure = exc
        try:
            os.ftruncate(self._file.fileno(), self._durable_offset)
            os.fsync(self._file.fileno())
        except OSError as cut:
            log.error("write-ahead log: cannot cut the failed group off %s: %s", self._file.name, cut)
        self._offset = self._durable_offset

    def _try_recovery(self) -> str | None:
        """Probe the disk (writer thread, holding ``_io``): a new segment, an empty record written and
        fsynced. None on success, else why not."""
        if self._failure is None:
            return None
        try:
            self._file.close()
            self._segment += 1
            self._open_segment()
            self._durable_offset = self._offset
            self._write(encode_record([]))
        except Exception as exc:
            return str(exc)
        self._failure = None
        return None

    def _complete(
        self,
        waiters: list[asyncio.Future[None]],
        then: list[Callable[[], None] | None],
        error: str | None,
        started: float,
    ) -> None:
        """In the event loop: apply a durable group's writes, then answer its waiters."""
        elapsed = time.monotonic() - started
        self.commit_seconds.append(elapsed)
        del self.commit_seconds[:-256]
        self.commit_latency.observe(elapsed)
        if error is None:
            for hook in then:
                if hook is not None:
                    hook()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return
        if self.failure is None:
            self.failure = f"the write-ahead log failed: {error}"
            self.failed_since = time.time()
            self.failures += 1
            log.error(
                "write-ahead log failed: %s; writes are refused until the disk takes them again",
                error,
                extra={"event": "wal_failed", "error": error},
            )
        if self.on_failure is not None:
            self.on_failure(self.failure)
        exc = DataDirError(self.failure)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _probed(self, error: str | None) -> None:
        """In the event loop: the outcome of a probe."""
        probe, self._probe = self._probe, None
        if error is None and self.failure is not None:
            down = time.time() - (self.failed_since or time.time())
            self.failure = None
            self.failed_since = None
            self.recoveries += 1
            log.warning(
                "write-ahead log takes writes again after %.1f s, in segment %d",
                down,
                self._segment,
                extra={"event": "wal_recovered", "segment": self._segment, "down_s": round(down, 2)},
            )
        if probe is not None and not probe.done():
            probe.set_result(error is None)

    def _write(self, data: bytes) -> None:
        """Write a group and make it durable (in the writer thread, holding ``_io``): every byte, or
        OSError."""
        _write_all(self._file.fileno(), data)
        self._offset += len(data)
        self.bytes_written += len(data)
        if self.fsync != "always":
            self._durable_offset = self._offset
        else:
            started = time.perf_counter()
            os.fsync(self._file.fileno())
            elapsed = time.perf_counter() - started
            self.fsync_seconds.append(elapsed)
            del self.fsync_seconds[:-256]
            self.fsync_latency.observe(elapsed)
            self.fsyncs += 1
            self._durable_offset = self._offset
            if self._mark_durable:
                # One fixed-width pwrite: a kill lands before or after it, never halfway through.
                line = f"{self._path(self._segment).name} {self._offset:020d}\n".encode()
                fd = os.open(self.directory / DURABLE_MARK, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.pwrite(fd, line, 0)
                finally:
                    os.close(fd)

    # -- flushes -----------------------------------------------------------------------------------------

    async def rotate(self) -> int:
        """Send later appends to a new segment; the last segment number a flush must cover.

        Capture the store after this returns: every record in the segments it covers is then applied
        (a group's writes are applied before anything queued after its write, this answer included).
        Records still buffered go to the new segment, and replaying them over the flush is harmless.
        """
        return await asyncio.to_thread(self._rotate)

    def _rotate(self) -> int:
        with self._io:  # never close a segment under a group being written
            if self._offset == len(LOG_MAGIC):
                return self._segment - 1  # nothing written here yet: no new segment for a flush that fails
            covered = self._segment
            self._file.close()
            self._segment += 1
            self._open_segment()
            return covered

    def drop_segments(self, covered: int) -> None:
        """Delete the segments up to ``covered``, and a previous version's snapshot: the item store
        durably holds what they hold. Blocking: run it in a worker thread."""
        for number in self._segments():
            if number <= covered:
                self._path(number).unlink(missing_ok=True)
        (self.directory / SNAPSHOT).unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def segment_bytes(self) -> int:
        """Bytes in the log segments not yet covered by the item store (what a restart replays)."""
        return sum(self._path(n).stat().st_size for n in self._segments())


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (a short write is continued), or raise OSError."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "a write to the write-ahead log wrote nothing")
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """Make a created, renamed or deleted file name durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
