"""Reading the item store in: the first items before the node serves, the rest while it serves.

A start reads up to ``AT_START`` items (``storage.read_at_start``) before the node serves, and
then, if more remain, the rest in the background, ``PAGE`` items read in a worker thread per turn of
the event loop: a restart takes about as long for ten million items as for a few hundred thousand.
Meanwhile the store reads an item it does not hold yet from the item store before anything reads or
changes it (``LikeStore.read_through``), so every request, delta and repair sees an item whole. Only
what spans every item is incomplete until the end: a listing of one user's likes is answered 503
``unavailable`` (``check_listing``), the node is not ready (``/readyz``), and item and like totals,
the per-user index and the anti-entropy tree fill in as the items arrive.

A state that fails its checksum found then: with the operator's leave (``--discard-damaged``) it is
dropped and the node writes under a new actor id from then on, as a start would have; without, the
node refuses writes (no dot it mints may collide with one in a damaged state), says why, and waits for
a restart with the flag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from itertools import islice

from node.durable.itemstore import DamagedStore, ItemStore, Pair
from node.durable.wal import DISCARD_FLAG
from node.errors import DataDirError, Unavailable
from node.state.store import LikeStore

log = logging.getLogger(__name__)

#: Items read before the node serves: about two seconds of a start.
AT_START = 200_000
#: Items read per turn of the event loop afterwards (read in a worker thread, joined on the loop).
PAGE = 2_000


class StoreLoader:
    """Reads one node's item store into its ``LikeStore``."""

    def __init__(
        self,
        store: LikeStore,
        items: ItemStore,
        *,
        discard_damaged: bool = False,
        new_actor: Callable[[], str] | None = None,
    ) -> None:
        """``new_actor`` claims a writer id under a new actor id, for when damaged states are dropped
        while the node serves (``NodeDataDir.claim_identity``)."""
        self.store = store
        self.items = items
        self._new_actor = new_actor
        self._discard = discard_damaged
        #: Whether the node serves yet (``run`` started), and why writes wait for a new actor id.
        self._serving = False
        self._switching: str | None = None
        self._switch: asyncio.Task[None] | None = None
        self._states: Iterator[Pair] = items.states(discard_damaged=discard_damaged)
        #: Items read so far, whether every one has been, and why the node refuses writes (a damaged
        #: state found while serving), if it does.
        self.loaded = 0
        self.done = False
        self.failure: str | None = None

    def read(self, limit: int = AT_START) -> None:
        """Read up to ``limit`` items now (before the node serves): DamagedStore as ``states`` says.
        If some remain, the store reads items it does not hold through the item store from now on."""
        self._join(list(islice(self._states, limit)), limit)
        if not self.done:
            self.store.read_through(self._point_read)

    async def run(self) -> None:
        """Read the rest, a page per turn of the event loop."""
        self._serving = True
        found = len(self.items.damaged)
        try:
            while not self.done:
                page = await asyncio.to_thread(lambda: list(islice(self._states, PAGE)))
                self._join(page, PAGE)
                if len(self.items.damaged) > found:
                    found = len(self.items.damaged)
                    await self._discarded()
        except DamagedStore as exc:
            self._fail(str(exc))
        except Exception as exc:  # a disk error, say: items not read yet must not look empty
            log.exception("reading the item store in failed")
            self._fail(f"reading the item store in failed: {exc}")
        if self.done and self.failure is None:
            self.store.read_through(None)
            log.info("item store read in: %d items", self.loaded)

    def check_listing(self) -> None:
        """Unavailable while a listing that spans every item (one user's likes) would be incomplete."""
        reason = self.not_ready()
        if reason is not None:
            raise Unavailable(reason)

    def not_ready(self) -> str | None:
        """Why the node should get no traffic yet, or None."""
        if self.failure is not None:
            return self.failure
        if self._switching is not None:
            return self._switching
        if not self.done:
            return f"reading the item store in: {self.loaded:,} items so far"
        return None

    def _join(self, page: list[Pair], limit: int) -> None:
        unreadable = self.store.restore_stored(page)
        if unreadable:
            log.warning("%d stored states unreadable, skipped; anti-entropy repairs them", unreadable)
        self.loaded += len(page)
        if len(page) < limit:
            self.done = True

    def _point_read(self, raw: bytes) -> bytes | None:
        try:
            return self.items.state(raw)
        except DamagedStore as exc:
            if not self._discard:
                self._fail(str(exc))
                raise Unavailable(f"this item's stored state is damaged: {self.failure}") from None
        # The operator's leave: the item is read as absent, its row deleted, the writer replaced.
        self.items.damaged.append(raw)
        if self._serving:
            self._switch = asyncio.get_running_loop().create_task(self._discarded(), name="new actor id")
        return None

    async def _discarded(self) -> None:
        """Damaged states were left out while serving: they may have held this writer's dots, so no
        write is taken until the store writes under a new actor id (the next flush deletes them)."""
        if self._switching is not None:
            return
        reason = self._switching = "damaged item states discarded; taking a new actor id"
        self.store.refuse_writes(reason)
        log.warning("item store damaged: %d states discarded; taking a new actor id", len(self.items.damaged))
        try:
            if self._new_actor is None:
                raise DataDirError("no new actor id can be claimed here")
            writer = await asyncio.to_thread(self._new_actor)
            while self.store.staged_items:  # writes still in flight keep their writer
                await asyncio.sleep(0.005)
            self.store.set_writer(writer)
        except Exception as exc:
            self._fail(f"damaged item states were discarded but no new actor id was taken: {exc}")
            return
        finally:
            self._switching = None
        if self.store.refusal == reason:  # not refused since for another reason (a failed log)
            self.store.refuse_writes(None)
        log.warning("writing as %s from now on", writer)

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = f"{reason}; restart the node with {DISCARD_FLAG} to drop what is damaged"
            self.store.refuse_writes(self.failure)
            log.error("item store damaged: %s", self.failure)
