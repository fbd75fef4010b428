"""A local write between its decision and its application: staged, logged, applied once durable.

A write is decided against the item's state and the writes still in flight on it (so a batch sees its
own earlier ops, and two writes in flight on one item get two dots), then logged; the store applies
it once its record is durable, or drops it unapplied when the record failed (``node.state.store``).
"""

from __future__ import annotations

from crdt import PNCounter
from node.state.item import Item

#: A staged write: ``(kind, item key, user, a like's dot, the delta of an unlike or a counter write
#: and its encoding, the counter's name, sequence number)``; fields a kind has no use for are empty.
Write = tuple[int, bytes, int, int, Item | None, bytes, str, int]
LIKE, UNLIKE, COUNTER = 0, 1, 2


class Staged:
    """An item's local writes in flight: staged, not yet applied."""

    __slots__ = ("counters", "last", "net", "ops", "users")

    def __init__(self, last: int) -> None:
        #: The last dot minted here for this node's writer.
        self.last = last
        #: user -> (sequence number of the user's last staged write, the dots it leaves the user).
        self.users: dict[int, tuple[int, tuple[int, ...]]] = {}
        #: Likes minus unlikes staged: the count once they apply is the state's plus this.
        self.net = 0
        #: Each counter written, as it will be once the staged writes apply (made on first use).
        self.counters: dict[str, PNCounter] | None = None
        #: Staged writes not yet applied or discarded.
        self.ops = 0
