"""When a write may be acknowledged: durable in the local log, and replicated as its level asks.

A write is staged in the store, logged, and applied only once its record is durable: before that no
read, delta, checkpoint or flush sees it, so a write whose record fails (a full or failing disk)
is dropped unapplied and answered 503 ``not_durable``: it changed nothing anywhere. The log then
refuses writes; this node probes the disk every ``PROBE_INTERVAL`` and takes writes again, in a new
log segment and under a new writer id (no dot of a refused write is minted twice), once it can.

Write levels (``?w=``): ``1`` (default) acknowledges once the write's log record is fsynced here;
``majority`` and ``all`` also wait until enough peers confirm they merged it (counting this node, a
majority of the nodes in the cluster file, or all of them); the write goes to them once durable here.
A level not met within ``api.write_timeout_ms`` is a 503 ``write_timeout`` that says the write is
durable here and may still reach the others: a timeout, never a loss. Too few live peers to meet it
is the same answer, given at once.

A write that changed nothing (a retried like, say) has no delta of its own, so at ``majority`` or
``all`` the item's full state goes to the peers instead: the retry then confirms what the first try
could not. Such retries are rare; the state of a huge item makes a large message.

Flushes write the items changed since the last one to the item store (``node.durable.itemstore``)
and then delete the log segments it covers: in the background once the log outgrows
``storage.flush_bytes`` or ``storage.flush_items`` items changed, and once more at a clean shutdown,
so the next start has little to replay and a stop little to write.
A flush encodes ``FLUSH_SLICE`` items per turn of the event loop and hands each slice to the store's
thread, so neither requests nor memory wait on the number of items changed. Changes from peers are
not logged; a flush stores them too, and a crash before it loses them here only: peers still hold
them, and anti-entropy brings them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from gossip.errors import TooFewPeers
from node.durable.itemstore import ItemStore
from node.durable.loading import StoreLoader
from node.durable.wal import Pair, WriteAheadLog
from node.errors import DataDirError, InvalidValue, NotDurable, WriteTimeout
from node.state.item import ItemKey
from node.state.staging import Write
from node.state.store import LikeStore

log = logging.getLogger(__name__)

#: Replicates pairs to peers: (pairs, copies, timeout seconds) -> how many peers confirmed.
Replicate = Callable[[Sequence[Pair], int, float], Awaitable[int]]
#: Items encoded per event-loop step while a flush runs, so requests keep being served.
FLUSH_SLICE = 2_000
#: How often the log size is compared with the flush threshold, in seconds.
FLUSH_CHECK_INTERVAL = 1.0
WRITE_LEVELS = ("1", "majority", "all")
#: Seconds between probes of a failed log's disk.
PROBE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class WriteLevel:
    """How many peers must confirm a write before it is acknowledged."""

    name: str
    peers: int


def write_level(text: str | None, cluster_size: int) -> WriteLevel:
    """The ``w`` query parameter: ``1`` (default), ``majority`` or ``all`` of ``cluster_size`` nodes."""
    if text is None or text == "1":
        return WriteLevel("1", 0)
    if text == "majority":
        return WriteLevel(text, cluster_size // 2)
    if text == "all":
        return WriteLevel(text, cluster_size - 1)
    raise InvalidValue(f"w: {text[:20]!r} is not one of {', '.join(WRITE_LEVELS)}")


class Durability:
    """The store's log, item store and write levels; it decides when the store's staged writes apply."""

    def __init__(
        self,
        store: LikeStore,
        wal: WriteAheadLog,
        items: ItemStore,
        replicate: Replicate,
        announce: Callable[[], None],
        *,
        cluster_size: int,
        write_timeout: float,
        flush_bytes: int,
        flush_items: int = 100_000,
        new_writer: Callable[[], str] | None = None,
        loader: StoreLoader | None = None,
    ) -> None:
        """``loader``: the item store still being read in, if it is (``node.durable.loading``)."""
        store.stage_writes = True
        self.store = store
        self.wal = wal
        self.items = items
        self.loader = loader
        wal.on_failure = self._log_failed
        #: A fresh writer id for this node, claimed durably (``NodeDataDir.claim_identity``).
        self._new_writer = new_writer or _suffixed(store.writer)
        self._recovering: asyncio.Task[None] | None = None
        self._replicate = replicate
        self._announce = announce
        self._cluster_size = cluster_size
        self._write_timeout = write_timeout
        self._flush_bytes = flush_bytes
        self._flush_items = flush_items
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loading: asyncio.Task[None] | None = None

    def level(self, text: str | None) -> WriteLevel:
        """The write level a request asks for (422 if it names none)."""
        return write_level(text, self._cluster_size)

    async def commit(self, level: WriteLevel, touched: Sequence[ItemKey] = ()) -> None:
        """Make the writes just staged in the store durable (they apply then), then replicated as
        ``level`` asks.

        ``touched`` names the items the request wrote (only needed above level 1). Call it right
        after the writes, with no await in between.
        """
        pairs = self.store.drain_journal()
        durable = self._log(pairs)
        try:
            if durable is not None:
                await durable
        except DataDirError as exc:
            raise not_durable(exc) from exc
        if level.peers:
            await self._replicate_level(level, touched, pairs)

    def commit_local(self) -> asyncio.Future[None] | None:
        """``commit`` at level 1 without a coroutine, for the like lane (``node.http.lane``): the future of
        the log record of the writes just staged (None when they changed nothing); it fails with
        ``DataDirError`` (see ``not_durable``) if the record could not be made durable."""
        return self._log(self.store.drain_journal())

    def _log(self, pairs: list[Pair]) -> asyncio.Future[None] | None:
        """Log the writes just staged; they apply once durable."""
        writes = self.store.drain_writes()
        if not pairs:
            return None
        return self.wal.append(pairs, partial(self._apply, writes))

    def _apply(self, writes: list[Write]) -> None:
        """The writes' record is durable: apply them, and let gossip push their deltas now."""
        self.store.apply(writes)
        self._announce()

    async def _replicate_level(
        self, level: WriteLevel, touched: Sequence[ItemKey], pairs: list[Pair]
    ) -> None:
        shipped = {key for key, _ in pairs}
        unchanged = [raw for raw in dict.fromkeys(k.to_bytes() for k in touched) if raw not in shipped]
        items = list(pairs)
        for raw in unchanged:
            state = self.store.state(raw)
            if state is not None:
                items.append((raw, state))
        if not items:
            return
        try:
            confirmed = await self._replicate(items, level.peers, self._write_timeout)
        except TooFewPeers as exc:
            raise WriteTimeout(
                f"w={level.name}: {exc.needed} peer(s) must confirm and only {exc.alive} "
                f"{'is' if exc.alive == 1 else 'are'} alive, so this answer did not wait; the write is "
                "durable on this node and reaches the others when they are back"
            ) from exc
        if confirmed < level.peers:
            raise WriteTimeout(
                f"w={level.name}: {confirmed} of the {level.peers} peer(s) needed confirmed within "
                f"{self._write_timeout * 1000:.0f} ms; the write is durable on this node and may still "
                "reach the others"
            )

    # -- a failed log ---------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Whether the node takes writes: from a failed log record until the log recovered and the
        node writes under a new writer id, it does not."""
        return self.wal.failure is None and self.store.writable

    def _log_failed(self, reason: str) -> None:
        """A log record failed (on the event loop, before its writers hear it): drop every staged
        write unapplied, refuse writes, and probe the disk until it takes them again."""
        self.store.discard_staged()
        self.store.refuse_writes(f"{reason}; this node takes writes again once its disk does")
        if self._recovering is None:
            self._recovering = asyncio.get_running_loop().create_task(self._recover(), name="log recovery")

    async def _recover(self) -> None:
        try:
            while True:
                await asyncio.sleep(PROBE_INTERVAL)
                if not await self.wal.recover():
                    continue
                try:
                    writer = await asyncio.to_thread(self._new_writer)
                except DataDirError as exc:
                    log.warning("the log recovered but a new writer id could not be claimed: %s", exc)
                    continue
                self.store.set_writer(writer)
                self.store.refuse_writes(None)
                log.warning("writes are taken again, under writer %s", writer)
                return
        finally:
            self._recovering = None

    # -- flushes -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the log's committer, the flush loop, and reading the rest of the item store in."""
        self.wal.start()
        self._task = asyncio.create_task(self._flush_when_due(), name="flushes")
        if self.loader is not None and not self.loader.done:
            self._loading = asyncio.create_task(self.loader.run(), name="item store reading")

    async def close(self, *, flush: bool = True) -> None:
        """Stop the flush loop, flush a last time (for a fast restart), close the log and the store."""
        for task in (self._loading, self._task, self._recovering):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._recovering = self._loading = None
        await self.wal.flush()
        if flush and self.writable:
            try:
                await self.flush()
            except Exception:  # the log still holds everything: the next start only replays more
                log.exception("final flush failed")
        await self.wal.close()
        await asyncio.to_thread(self.items.close)

    async def flush(self) -> int:
        """Write the items changed since the last flush to the item store, then delete the log
        segments it now covers; how many items were written."""
        async with self._flushing:
            covered = await self.wal.rotate()
            keys = self.store.unflushed.drain()  # every record up to ``covered`` is applied by now
            writing: asyncio.Future[None] | None = None
            try:
                await self.items.begin()
                pending = sorted(keys)  # in key order, the store's B-tree takes them as appends
                for start in range(0, len(pending), FLUSH_SLICE):
                    pairs = []
                    for raw in pending[start : start + FLUSH_SLICE]:
                        state = await self.store.stored_state(raw)
                        if state is not None:
                            pairs.append((raw, state))
                    if writing is not None:  # one slice written while the next is encoded
                        await writing
                    writing = asyncio.ensure_future(self.items.put(pairs))
                if writing is not None:
                    await writing
                await self.items.commit(covered, len(keys))
            except BaseException:
                if writing is not None:  # the transaction is the thread's until its slice is written
                    await asyncio.gather(writing, return_exceptions=True)
                self.store.unflushed.restore(keys)  # the next flush writes them
                with contextlib.suppress(Exception):
                    await self.items.rollback()
                raise
            await asyncio.to_thread(self.wal.drop_segments, covered)
            log.info("flushed %d items to the item store, up to log segment %d", len(keys), covered)
            return len(keys)

    async def _flush_when_due(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_CHECK_INTERVAL)
            try:
                if not self.writable:
                    continue
                if len(self.store.unflushed) >= self._flush_items or (
                    await asyncio.to_thread(self.wal.segment_bytes) >= self._flush_bytes
                ):
                    await self.flush()
            except Exception:  # a full disk, say: keep logging; retry at the next check
                log.exception("flush failed")


def not_durable(exc: DataDirError) -> NotDurable:
    """The answer to a write whose log record failed."""
    return NotDurable(f"the write was not made durable: {exc}")


def _suffixed(writer: str) -> Callable[[], str]:
    """New writer ids for a store with no data directory: ``writer`` with a growing suffix."""
    renewals = iter(range(1, 1 << 62))
    return lambda: f"{writer[:48]}~{next(renewals)}"
