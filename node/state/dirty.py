"""The checkpoint's dirty set: the items changed since the checkpointer last looked, and whose likes.

The users of an item are a list, not a set: after a load of a million new items each is dirty with
one user, and a set costs 216 bytes where a list of one costs 64. A user whose like changed twice is
listed twice; the checkpoint reads them as a set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


class DirtyItems:
    """Items changed since the last ``drain``, each with the users whose like changed in it."""

    __slots__ = ("_dirty", "_since")

    def __init__(self) -> None:
        self._dirty: dict[bytes, list[int]] = {}
        #: When the oldest change in ``_dirty`` happened (``time.monotonic()``).
        self._since: float | None = None

    def changed(self, raw: bytes, added: Sequence[int], removed: Sequence[int]) -> None:
        users = self._dirty.get(raw)
        if users is None:
            if not self._dirty:
                self._since = time.monotonic()
            users = self._dirty[raw] = []
        if added:
            users.extend(added)
        if removed:
            users.extend(removed)

    def drain(self) -> dict[bytes, list[int]]:
        """The items changed since the last call (writes and merges alike), each with the users whose
        like changed in it (empty when only counters did): what the checkpointer must write."""
        dirty, self._dirty = self._dirty, {}
        self._since = None
        return dirty

    @property
    def since(self) -> float | None:
        """When (``time.monotonic()``) the oldest change not yet drained happened; None if none."""
        return self._since if self._dirty else None
