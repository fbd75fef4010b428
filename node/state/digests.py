"""Anti-entropy's view of the store: the keys changed since it last asked, each item's digest, and a
fingerprint of the whole store.

The fingerprint is the XOR of one keyed hash per item, so it is independent of insertion order and
maintained incrementally: an item's hash is folded in once its digest is computed and folded out when
the item changes, so asking costs only the items changed since the last time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Sequence

#: Digest width: 128 bits make an accidental collision between two item states negligible.
DIGEST_BYTES = 16
#: Items ``fingerprint_aside`` digests per turn of the event loop (about 10 ms of work).
SLICE = 1000


class ItemDigests:
    """Digests of the store's items (``keys`` lists them, ``state`` encodes one), cached until an item
    changes."""

    __slots__ = ("_changed", "_digests", "_drained_once", "_fingerprint", "_keys", "_state", "_unfolded")

    def __init__(self, keys: Callable[[], Iterable[bytes]], state: Callable[[bytes], bytes | None]) -> None:
        self._keys = keys
        self._state = state
        self._changed: set[bytes] = set()
        self._drained_once = False
        #: Digests computed since the item last changed; every other item is in ``_unfolded``.
        self._digests: dict[bytes, bytes] = {}
        self._unfolded: set[bytes] = set()
        #: XOR of ``_fold(key, digest)`` over the items in ``_digests``.
        self._fingerprint = 0

    def changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        """Forget the item's digest and fold it out of the fingerprint."""
        self._changed.add(raw)
        digest = self._digests.pop(raw, None)
        if digest is not None:
            self._fingerprint ^= _fold(raw, digest)
        self._unfolded.add(raw)

    def drain_changed(self) -> Iterable[bytes]:
        """The keys changed since the last call; the first call returns every key."""
        if not self._drained_once:
            self._drained_once = True
            self._changed = set()
            return list(self._keys())
        changed, self._changed = self._changed, set()
        return changed

    def digest(self, key: bytes) -> bytes:
        """blake2b of the item's canonical encoding, cached until the item changes."""
        cached = self._digests.get(key)
        if cached is not None:
            return cached
        state = self._state(key)
        if state is None:
            return b""
        digest = hashlib.blake2b(state, digest_size=DIGEST_BYTES).digest()
        self._digests[key] = digest
        unfolded = self._unfolded
        unfolded.discard(key)
        if not unfolded:  # a set never shrinks its table: one that held every item would stay that big
            self._unfolded = set()
        self._fingerprint ^= _fold(key, digest)
        return digest

    async def fingerprint_aside(self) -> str:
        """``fingerprint``, the items changed since it was last asked digested ``SLICE`` at a time
        between turns of the event loop: after a load of a million new items, digesting them all at
        once would hold every request up for seconds."""
        pending = list(self._unfolded)
        for start in range(0, len(pending), SLICE):
            for raw in pending[start : start + SLICE]:
                self.digest(raw)
            await asyncio.sleep(0)
        return self.fingerprint()

    def fingerprint(self) -> str:
        """A digest of every item, independent of insertion order: equal stores, equal prints."""
        for raw in list(self._unfolded):
            self.digest(raw)
        return self._fingerprint.to_bytes(DIGEST_BYTES, "big").hex()


def _fold(key: bytes, digest: bytes) -> int:
    """An item's contribution to the fingerprint (keyed, so equal items under two keys differ)."""
    return int.from_bytes(hashlib.blake2b(key + digest, digest_size=DIGEST_BYTES).digest(), "big")
