"""The causal context: every dot a replica has seen, as a version vector plus a dot cloud.

Almeida, Shoker and Baquero (*Delta State Replicated Data Types*, 2016, section 6) keep the context
as a compact vector ``actor -> n`` (all of the actor's dots 1..n seen) and a cloud of dots seen out
of order. A dot joins the vector only once every earlier dot of its actor is there: dots received
out of order stay in the cloud exactly, so a late delta is never mistaken for one already seen.
"""

from __future__ import annotations

from collections.abc import Iterable

from crdt.dots import ACTOR_BITS, ACTOR_MASK, COUNTER_STEP, make_dot


class CausalContext:
    """A set of dots, kept compact: vector for contiguous prefixes, cloud for the rest."""

    __slots__ = ("cloud", "vv")

    def __init__(self) -> None:
        self.vv: dict[int, int] = {}
        self.cloud: set[int] = set()

    def covers(self, dot: int) -> bool:
        """Whether ``dot`` has been seen."""
        return dot >> ACTOR_BITS <= self.vv.get(dot & ACTOR_MASK, 0) or dot in self.cloud

    def next_dot(self, actor: int) -> int:
        """A dot of ``actor`` newer than any seen, for a new event of that actor."""
        counter = self.vv.get(actor, 0)
        for dot in self.cloud:
            if dot & ACTOR_MASK == actor:
                counter = max(counter, dot >> ACTOR_BITS)
        return make_dot(actor, counter + 1)

    def add(self, dot: int) -> None:
        """Record ``dot`` as seen."""
        actor = dot & ACTOR_MASK
        have = self.vv.get(actor, 0)
        counter = dot >> ACTOR_BITS
        if counter == have + 1:
            self.vv[actor] = counter
            if self.cloud:
                self._compact((actor,))
        elif counter > have:
            self.cloud.add(dot)

    def join(self, other: CausalContext) -> None:
        """Union with ``other`` in place."""
        vv = self.vv
        touched = {actor for actor, counter in other.vv.items() if counter > vv.get(actor, 0)}
        for actor in touched:
            vv[actor] = other.vv[actor]
        cloud = self.cloud
        if touched and cloud:
            self.cloud = cloud = {d for d in cloud if d >> ACTOR_BITS > vv.get(d & ACTOR_MASK, 0)}
        if other.cloud:
            fresh = [d for d in other.cloud if d >> ACTOR_BITS > vv.get(d & ACTOR_MASK, 0)]
            cloud.update(fresh)
            touched.update(d & ACTOR_MASK for d in fresh)
        if cloud and touched:
            self._compact(touched)

    def _compact(self, actors: Iterable[int]) -> None:
        """Move cloud dots that extend an actor's contiguous prefix into the vector."""
        vv, cloud = self.vv, self.cloud
        for actor in actors:
            counter = vv.get(actor, 0)
            nxt = make_dot(actor, counter + 1)
            while nxt in cloud:
                cloud.remove(nxt)
                counter += 1
                nxt += COUNTER_STEP
            if counter:
                vv[actor] = counter

    def size(self) -> int:
        """How many dots the context covers."""
        return sum(self.vv.values()) + len(self.cloud)

    def copy(self) -> CausalContext:
        """An independent copy."""
        clone = CausalContext()
        clone.vv = self.vv.copy()
        clone.cloud = self.cloud.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self.vv == other.vv and self.cloud == other.cloud

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CausalContext(vv={self.vv!r}, cloud={sorted(self.cloud)!r})"
