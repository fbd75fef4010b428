"""The per-user reverse index, "my likes": which items each user likes here.

A hot item (``HOT_ITEM_LIKES`` likers) keeps its likers out of the index: a million users' likes of
one post would cost the index about 42 bytes each, while asking the post's liker set is as quick and
the hot items are few (at most ``likes / (HOT_ITEM_LIKES / 2)``). It returns to the index below half
of the line, so an item near it does not move in and out on every like.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

#: Likers that make an item hot (see the module docstring).
HOT_ITEM_LIKES = 4096


class Items(Protocol):
    """What the index reads of the store's items."""

    def count_of(self, raw: bytes) -> int:
        """How many users like the item under ``raw``."""

    def likers_of(self, raw: bytes) -> Collection[int]:
        """The users who like the item under ``raw``."""


class UserIndex:
    """user -> the items of ``items`` (the store, read here) the user likes."""

    __slots__ = ("_cold_likes", "_hot", "_hot_likes", "_items", "_keys", "_liked_by", "_likes")

    def __init__(self, items: Items, hot_item_likes: int = HOT_ITEM_LIKES) -> None:
        if hot_item_likes < 2:
            raise ValueError("hot_item_likes must be at least 2")
        self._items = items
        #: user -> the key of the one item the user likes here, or a set of keys when several, over
        #: the items that are not hot. Most users like one item of a node's share, and a set costs 216
        #: bytes where a key shared with ``_keys`` costs a pointer.
        self._liked_by: dict[int, bytes | set[bytes]] = {}
        #: How many (user, item) likes ``_liked_by`` holds.
        self._likes = 0
        #: The items with at least ``_hot_likes`` likers when they last crossed that line (and not yet
        #: back under ``_cold_likes``): their likers are not in ``_liked_by``.
        self._hot: set[bytes] = set()
        self._hot_likes = hot_item_likes
        self._cold_likes = hot_item_likes // 2
        #: raw key -> itself: every index entry of an item shares this one bytes object.
        self._keys: dict[bytes, bytes] = {}

    @property
    def likes(self) -> int:
        """Likes held, over every item (the sum of their counts), without a scan of the items."""
        return self._likes + sum(map(self._items.count_of, self._hot))

    def liked_by(self, user: int) -> list[bytes]:
        """The keys of the items ``user`` likes, unordered."""
        raws = list(_keys_of(self._liked_by.get(user)))
        raws.extend(raw for raw in self._hot if user in self._items.likers_of(raw))
        return raws

    def changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        for user in removed:  # losses first: ``_index`` may find the item hot and take it out whole
            self._unindex(user, raw)
        if added:
            self._index(raw, added)

    def _index(self, raw: bytes, users: Iterable[int]) -> None:
        """``users`` now like the item (after its liker set changed)."""
        raw = self._keys.setdefault(raw, raw)
        if raw in self._hot:
            return
        self._add(raw, users)
        if self._items.count_of(raw) >= self._hot_likes:
            self._heat(raw)

    def _unindex(self, user: int, raw: bytes) -> None:
        """``user`` no longer likes the item (after its liker set changed)."""
        if raw in self._hot:
            if self._items.count_of(raw) < self._cold_likes:
                self._cool(self._keys[raw])
        else:
            self._drop_entry(user, raw)

    def _heat(self, raw: bytes) -> None:
        """The item became hot: take its likers out of the index."""
        self._hot.add(raw)
        for user in self._items.likers_of(raw):
            self._drop_entry(user, raw)

    def _cool(self, raw: bytes) -> None:
        """The hot item fell under ``_cold_likes``: put its likers back."""
        self._hot.discard(raw)
        self._add(raw, self._items.likers_of(raw))

    def _add(self, raw: bytes, users: Iterable[int]) -> None:
        """Index ``users`` as liking ``raw`` (a shared key)."""
        liked_by = self._liked_by
        users_before = len(liked_by)
        for user in users:
            keys = liked_by.setdefault(user, raw)
            if keys is not raw:
                if isinstance(keys, set):
                    if raw not in keys:
                        keys.add(raw)
                        self._likes += 1
                elif keys != raw:
                    liked_by[user] = {keys, raw}
                    self._likes += 1
        self._likes += len(liked_by) - users_before  # users who liked nothing here before

    def _drop_entry(self, user: int, raw: bytes) -> None:
        """Take ``raw`` out of ``user``'s entry, if there."""
        keys = self._liked_by.get(user)
        if isinstance(keys, set):
            if raw in keys:
                keys.remove(raw)
                self._likes -= 1
            if len(keys) == 1:
                (self._liked_by[user],) = keys
        elif keys == raw:
            del self._liked_by[user]
            self._likes -= 1


def _keys_of(entry: bytes | set[bytes] | None) -> Iterable[bytes]:
    """The keys of an index entry, whichever its form."""
    if entry is None:
        return ()
    return entry if isinstance(entry, set) else (entry,)
