"""Reference models, written for obviousness rather than speed, that the CRDTs must agree with."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

_tags = itertools.count()


@dataclass
class ReferenceORSet:
    """The textbook OR-set: every add gets a unique tag; remove tombstones the tags it observed."""

    tags: dict[int, int] = field(default_factory=dict)  # tag -> element
    tombstones: set[int] = field(default_factory=set)

    def add(self, element: int) -> ReferenceORSet:
        tag = next(_tags)
        self.tags[tag] = element
        return ReferenceORSet({tag: element}, set())

    def remove(self, element: int) -> ReferenceORSet:
        observed = {t for t, e in self.tags.items() if e == element and t not in self.tombstones}
        self.tombstones |= observed
        return ReferenceORSet({}, set(observed))

    def merge(self, other: ReferenceORSet) -> None:
        self.tags.update(other.tags)
        self.tombstones |= other.tombstones

    def value(self) -> frozenset[int]:
        return frozenset(e for t, e in self.tags.items() if t not in self.tombstones)

    def copy(self) -> ReferenceORSet:
        return ReferenceORSet(dict(self.tags), set(self.tombstones))


@dataclass
class ReferenceCounter:
    """A counter as an operation log: per actor, how many of its operations this replica has seen.

    A counter delta carries the actor's running total, so seeing an actor's k-th operation means
    seeing all of its first k: the model keeps that prefix length and sums the logged amounts.
    """

    log: dict[str, list[int]]  # shared by every replica of one run: actor and half -> amounts
    seen: dict[str, int] = field(default_factory=dict)

    def apply(self, actor: str, amount: int, half: str = "+") -> ReferenceCounter:
        """Record an operation; increments ("+") and decrements ("-") are independent prefixes."""
        key = f"{actor}{half}"
        self.log.setdefault(key, []).append(amount if half == "+" else -amount)
        self.seen[key] = len(self.log[key])
        return ReferenceCounter(self.log, {key: self.seen[key]})

    def merge(self, other: ReferenceCounter) -> None:
        for key, n in other.seen.items():
            self.seen[key] = max(self.seen.get(key, 0), n)

    def value(self) -> int:
        return sum(sum(self.log[key][:n]) for key, n in self.seen.items())

    def copy(self) -> ReferenceCounter:
        return ReferenceCounter(self.log, dict(self.seen))
