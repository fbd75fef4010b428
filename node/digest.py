"""Item digests that cost what changed, not what the item holds.

Anti-entropy compares items by digest, and a digest used to be a hash of the item's whole encoding:
every like of an item with n likers cost O(n) to re-digest once it settled, which under load was a
quarter of a node's time (and 0.6 s for a post with a million likes). Here a digest is a hash of

- the liker set's causal context (one entry per writer, and the rare out-of-order dots),
- the item's counters (a few small PN-counters),
- and the sum, modulo 2**128, of one hash per liker over the liker and its dots,

so equal states have equal digests whatever their history, and a like changes the sum by one hash.
The sum is kept per item as likers change (``LikerSums``); a change touching many likers at once (a
full state from a peer, a restore) marks it stale instead, and it is recomputed when next asked.
A different state has a different digest but for a 128-bit collision: the per-liker hashes are keyed
blake2b, so no client can choose user ids whose hashes cancel out without knowing the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgpack

from crdt import ORSet, encode
from node.item import Item

#: Digest width: 128 bits make an accidental collision between two item states negligible.
DIGEST_BYTES = 16
#: Tags the digest's layout: a node computing digests differently never compares equal by accident.
DIGEST_VERSION = b"\x02"
#: Likers changed at once (or a quarter of the item's, if more) beyond which the sum is recomputed
#: when next asked rather than adjusted (adjusting costs two hashes a liker, recomputing one).
ADJUST_LIMIT = 256
_MODULUS = 1 << (8 * DIGEST_BYTES)
#: The key of the per-liker hashes: the same on every node (digests are compared across nodes).
_LIKER_KEY = b"likes/liker-digest/v2"
_pack = msgpack.Packer().pack


def liker_hash(user: int, dots: Iterable[tuple[str, int]]) -> int:
    """One liker's share of the sum: its id and its ``(writer, counter)`` dots, in canonical order."""
    packed = _pack((user, sorted(dots)))
    return int.from_bytes(hashlib.blake2b(packed, digest_size=DIGEST_BYTES, key=_LIKER_KEY).digest(), "big")


def digest_of(item: Item, liker_sum: int) -> bytes:
    """The digest of ``item`` whose likers' hashes sum to ``liker_sum``."""
    counters = [[name, encode(item.counters[name])] for name in sorted(item.counters)]
    body = _pack((item.likers.context_wire(), counters, liker_sum.to_bytes(DIGEST_BYTES, "big")))
    return hashlib.blake2b(DIGEST_VERSION + body, digest_size=DIGEST_BYTES).digest()


def liker_sum(likers: ORSet) -> int:
    """The sum from scratch: every liker's hash."""
    return sum(liker_hash(user, likers.dots_of(user)) for user in likers) % _MODULUS


class LikerSums:
    """Per item, the sum of its likers' hashes, adjusted as likers change.

    A change calls ``before`` with the likers it may touch, then mutates, then ``after`` with what
    ``before`` returned: the sum moves by the difference. An item with no sum here (new, or marked
    stale) gets one from scratch when ``of`` is asked.
    """

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        self._sums: dict[bytes, int] = {}

    def new(self, raw: bytes) -> None:
        """A new item: no likers, a sum of zero."""
        self._sums[raw] = 0

    def of(self, raw: bytes, likers: ORSet) -> int:
        """The item's sum, computed from scratch if stale."""
        total = self._sums.get(raw)
        if total is None:
            total = self._sums[raw] = liker_sum(likers)
        return total

    def before(self, raw: bytes, likers: ORSet, users: Iterable[int]) -> tuple[list[int], int] | None:
        """The share of ``users`` now, to pass to ``after``; None when the sum will be stale anyway."""
        if raw not in self._sums:
            return None
        candidates = list(users)
        if len(candidates) > max(ADJUST_LIMIT, len(likers) // 4):  # cheaper from scratch, later
            del self._sums[raw]
            return None
        return candidates, self._share(likers, candidates)

    def after(self, raw: bytes, likers: ORSet, noted: tuple[list[int], int] | None) -> None:
        """Move the sum by the change in the share of the users ``before`` noted."""
        if noted is None or raw not in self._sums:
            return
        candidates, old = noted
        self._sums[raw] = (self._sums[raw] + self._share(likers, candidates) - old) % _MODULUS

    def added(self, raw: bytes, user: int, writer: str, counter: int) -> None:
        """A user absent until now likes the item under the one dot ``(writer, counter)``."""
        total = self._sums.get(raw)
        if total is not None:
            self._sums[raw] = (total + liker_hash(user, ((writer, counter),))) % _MODULUS

    def stale(self, raw: bytes) -> None:
        """Forget the item's sum (recomputed when next asked)."""
        self._sums.pop(raw, None)

    @staticmethod
    def _share(likers: ORSet, users: list[int]) -> int:
        return sum(liker_hash(user, likers.dots_of(user)) for user in users if user in likers)
