"""The contract every CRDT here implements: join, read, copy, and a deterministic wire form.

As riak_dt's ``riak_dt`` behaviour and akka's ``ReplicatedData`` trait, one small contract and many
small types. Each type's module states that it implements it (``_CONTRACT: type[ReplicatedData[V]]``),
so mypy checks every type against it, and the codec frames any of them alike.

What the members promise, beyond their signatures:

- ``merge`` is a join: commutative, associative and idempotent, so a state or a delta may arrive
  twice, late or out of order. It changes the receiver in place (the states are big; a copy per
  join would cost more than the join);
- ``value`` depends on the state alone, never on the order of the joins that built it;
- ``to_wire`` is deterministic: equal states give equal wire forms (sets and maps sorted), so
  digests can be taken over encodings; ``from_wire`` checks every invariant and raises
  ``CodecError`` for anything else;
- the type's constructor, without arguments, makes the empty state, the join's identity.

The mutators are no part of the contract: each type has its own (``add``, ``increment``...), each
changes the state in place and returns its delta, a value of the same type.
"""

from __future__ import annotations

from typing import Any, Protocol, Self, TypeVar

V_co = TypeVar("V_co", covariant=True)


class ReplicatedData(Protocol[V_co]):
    """A state-based, delta-enabled CRDT whose value is a ``V_co``; see the module docstring."""

    __slots__ = ()

    def merge(self, other: Self, /) -> None:
        """Join ``other`` (a full state or a delta) into this state, in place."""
        ...

    def value(self) -> V_co:
        """What the state means to a reader."""
        ...

    def copy(self) -> Self:
        """An independent copy."""
        ...

    def to_wire(self) -> list[Any]:
        """A deterministic msgpack-ready form."""
        ...

    @classmethod
    def from_wire(cls, wire: Any, /) -> Self:
        """The state of a ``to_wire`` form; ``CodecError`` if it is not one."""
        ...
