"""The gossip outbox: this node's own deltas, applied and not yet handed to gossip.

Likes are kept as ``(user, dot)`` per item and made into one delta per item only when gossip takes
them: far cheaper than a delta object per like. An item liked once in an interval (most items under
load) ships in the one-like form. Other deltas (unlikes, counters) are joined per item; the encoding
made for the log is reused when the delta is one write's alone.
"""

from __future__ import annotations

from crdt import ORSet
from crdt.dots import ACTOR_BITS, ACTOR_MASK, actor_name
from node.state.item import MAX_UNLIKED_HINTS, Item, encode_item, encode_like


class GossipOutbox:
    """Local deltas since gossip last drained them."""

    __slots__ = ("_bytes", "_likes", "_others", "_unnamed")

    def __init__(self) -> None:
        self._likes: dict[bytes, list[tuple[int, int]]] = {}
        self._others: dict[bytes, Item] = {}
        #: The encoding of a pending delta that is one write's alone (made for the log, reused).
        self._bytes: dict[bytes, bytes] = {}
        #: Items whose pending deltas unliked more than ``MAX_UNLIKED_HINTS`` users and so name none.
        self._unnamed: set[bytes] = set()

    def add_likes(self, raw: bytes, likes: list[tuple[int, int]]) -> None:
        """Likes ``(user, dot)`` applied to the item (the list is kept, not copied)."""
        pending = self._likes.get(raw)
        if pending is None:
            self._likes[raw] = likes
        else:
            pending.extend(likes)

    def add_delta(self, raw: bytes, delta: Item, encoded: bytes) -> None:
        """Another applied delta (``encoded``: its bytes); ``delta`` may be joined with later ones."""
        pending = self._others.get(raw)
        if pending is None:
            pending = self._others[raw] = delta
            self._bytes[raw] = encoded
        else:
            pending.merge(delta)
            self._bytes.pop(raw, None)
        if raw in self._unnamed or len(pending.unliked) > MAX_UNLIKED_HINTS:
            self._unnamed.add(raw)  # a partial list would be wrong: name nobody
            pending.unliked.clear()

    def drain(self) -> list[tuple[bytes, bytes]]:
        """The deltas since the last call, one joined delta per item."""
        likes, self._likes = self._likes, {}
        others, self._others = self._others, {}
        encoded, self._bytes = self._bytes, {}
        self._unnamed.clear()
        deltas = []
        for raw, added in likes.items():
            other = others.pop(raw, None)
            if other is None and len(added) == 1:  # most items of a busy interval: one like each
                user, dot = added[0]
                deltas.append((raw, encode_like(actor_name(dot & ACTOR_MASK), dot >> ACTOR_BITS, user)))
                continue
            delta = Item(likers=ORSet.of_dots(added))
            if other is not None:
                delta.merge(other)
            deltas.append((raw, encode_item(delta)))
        deltas.extend((raw, encoded.get(raw) or encode_item(delta)) for raw, delta in others.items())
        return deltas

    def discard(self) -> int:
        """Forget the deltas since the last call unencoded (a node alone); how many items."""
        dropped = len(self._likes.keys() | self._others.keys())
        self._likes, self._others, self._bytes = {}, {}, {}
        self._unnamed.clear()
        return dropped
