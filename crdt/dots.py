"""Dots: the unique tags of the OR-set, packed into one int each.

A dot is ``(actor, counter)``: the counter-th event of that actor. Storing a tuple per element costs
about 90 bytes; packing the pair into one int (``counter << ACTOR_BITS | actor_index``) costs 28-32.
Actor names are interned once per process into small indices (like ``sys.intern``): the table only
grows, the mapping never changes, and encodings always carry names, never indices, so the table is
a process-local cache and never part of a value.
"""

from __future__ import annotations

ACTOR_BITS = 20
ACTOR_MASK = (1 << ACTOR_BITS) - 1
MAX_ACTORS = 1 << ACTOR_BITS
#: Counters fit in 44 bits so that a packed dot fits in an unsigned 64-bit integer.
MAX_COUNTER = (1 << 44) - 1
MAX_ACTOR_NAME = 64
#: One counter step for the same actor: ``dot + COUNTER_STEP`` is the actor's next dot.
COUNTER_STEP = 1 << ACTOR_BITS

_names: list[str] = []
_indices: dict[str, int] = {}


def valid_actor_name(name: object) -> bool:
    """Whether ``name`` can name an actor: a non-empty string of at most 64 characters."""
    return type(name) is str and 0 < len(name) <= MAX_ACTOR_NAME


def actor_index(name: str) -> int:
    """The process-wide index of actor ``name``, interning it on first use."""
    index = _indices.get(name)
    if index is None:
        if not valid_actor_name(name):
            raise ValueError(f"actor must be a non-empty string of at most {MAX_ACTOR_NAME} chars")
        if len(_names) >= MAX_ACTORS:
            raise ValueError(f"more than {MAX_ACTORS} distinct actors in one process")
        index = len(_names)
        _names.append(name)
        _indices[name] = index
    return index


def known_actor_index(name: str) -> int | None:
    """The index of ``name`` if this process has interned it, else None; never interns.

    For names from untrusted input (a client's causal token): interning them would let a client
    fill the table, and a name never interned here has no dot in any value of this process.
    """
    return _indices.get(name)


def actor_name(index: int) -> str:
    """The name interned under ``index``."""
    return _names[index]


def make_dot(actor: int, counter: int) -> int:
    """Pack an actor index and a counter into a dot."""
    return counter << ACTOR_BITS | actor


def dot_actor(dot: int) -> int:
    """The actor index of a dot."""
    return dot & ACTOR_MASK


def named(dot: int) -> tuple[str, int]:
    """A dot as ``(actor name, counter)``: what leaves the process (indices never do)."""
    return _names[dot & ACTOR_MASK], dot >> ACTOR_BITS


def dot_counter(dot: int) -> int:
    """The counter of a dot."""
    return dot >> ACTOR_BITS
