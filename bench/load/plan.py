"""What each request of a load is: its shape's path and body, the writes it makes, and the ``zipf``
shape's plan of likes and unlikes decided before the clock starts."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter

from bench.load.spec import POPULATED_SPREAD, UNLIKE_LAG, LoadSpec


def populated_count(item: int) -> int:
    """How many likes the ``counts`` shape expects item ``item`` (an offset from ``item_base``) to
    hold: the caller populates them so before the load, and every answer is checked against it."""
    return item % POPULATED_SPREAD + 1


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One request of the load: where it goes, what it carries, what it writes, what it waits for."""

    url: int
    method: bytes
    path: str
    body: bytes
    #: The item ids each write operation touches, with +1 (like) or -1 (unlike); empty for reads.
    writes: tuple[tuple[int, int], ...]
    #: Index of an earlier request of this worker that must be answered first (an unlike's like).
    after: int | None = None


class ZipfPlan:
    """One worker's likes and unlikes over Zipf-popular items, decided before the clock starts.

    Every like is by a new user, so each (user, item) pair is liked once; a share of the requests
    unlike a like made at least ``UNLIKE_LAG`` requests earlier, and is sent only once that like is
    answered and to the same node (users are routed by id), so the unlike always observes it. The
    final state is therefore known: likes minus unlikes per item (``planned``)."""

    def __init__(self, spec: LoadSpec, index: int, count: int, user0: int) -> None:
        rng = random.Random(spec.seed * 1_000_003 + index)
        weights = [1.0 / (rank + 1) ** spec.zipf_exponent for rank in range(spec.items)]
        ranks = rng.choices(range(spec.items), cum_weights=list(itertools.accumulate(weights)), k=count)
        self.items: list[int] = []
        self.users: list[int] = []
        self.after: dict[int, int] = {}
        self.planned: Counter[int] = Counter()
        eligible: list[int] = []
        next_eligible = 0
        likes: list[int] = []
        for i in range(count):
            while next_eligible < len(likes) and likes[next_eligible] <= i - UNLIKE_LAG:
                eligible.append(likes[next_eligible])
                next_eligible += 1
            if eligible and rng.random() < spec.unlike_share:
                at = rng.randrange(len(eligible))
                target = eligible[at]
                eligible[at] = eligible[-1]
                eligible.pop()
                self.after[i] = target
                self.items.append(self.items[target])
                self.users.append(self.users[target])
                self.planned[self.items[target]] -= 1
            else:
                item = spec.item_base + ranks[i]
                self.items.append(item)
                self.users.append(user0 + i)
                self.planned[item] += 1
                likes.append(i)
        self.unlikes = len(self.after)
        self.likes = count - self.unlikes
        self.targets = frozenset(self.after.values())
