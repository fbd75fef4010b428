"""Each CRDT type as the shared property harness sees it: a constructor, operations and a model.

In the style of riak_dt's ``crdt_statem_eqc``: a type only supplies its operations and a trivial
model; the state machine and the law tests are written once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st

import crdt.columns
import crdt.orset
from crdt import GCounter, ORSet, PNCounter
from tests.crdt.reference import ReferenceCounter, ReferenceORSet

#: Few distinct elements so that adds and removes of the same user collide often.
elements = st.one_of(st.integers(0, 5), st.sampled_from([2**32, 2**64 - 1]))
amounts = st.integers(0, 1000)


@contextmanager
def columns_from(
    compact_min: int, *, scan_below: int | None = None, block: int | None = None
) -> Iterator[None]:
    """ORSets move their single-dot elements into the columns from ``compact_min`` recent ones (and,
    when given, find a peer's removals by index from ``scan_below`` elements, and read the columns
    ``block`` slots at a time): the big-set layout, on the few elements a property test draws."""
    patched = {
        (crdt.columns, "COMPACT_MIN"): compact_min,
        (crdt.orset, "_SCAN_BELOW"): scan_below,
        (crdt.columns, "_BLOCK"): block,
    }
    saved = {(module, name): getattr(module, name) for module, name in patched}
    try:
        for (module, name), value in patched.items():
            if value is not None:
                setattr(module, name, value)
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


@dataclass(frozen=True)
class Kind:
    """How to build, change and model one CRDT type."""

    name: str
    new: Callable[[], Any]
    new_model: Callable[[dict[str, list[int]]], Any]
    ops: st.SearchStrategy[tuple[str, int]]
    apply: Callable[[Any, Any, str, tuple[str, int]], tuple[Any, Any]]
    #: For ORSets: run with ``columns_from(compact_min)``, so the sets live mostly in columns.
    compact_min: int | None = None

    def __repr__(self) -> str:
        return self.name

    def configured(self) -> AbstractContextManager[None]:
        """Where this kind's values are built and joined (wrap a test's body in it)."""
        return nullcontext() if self.compact_min is None else columns_from(self.compact_min, scan_below=0)


def _apply_orset(s: ORSet, m: ReferenceORSet, actor: str, op: tuple[str, int]) -> tuple[Any, Any]:
    verb, element = op
    if verb == "add":
        return s.add(actor, element), m.add(element)
    return s.remove(element), m.remove(element)


def _apply_counter(c: Any, m: ReferenceCounter, actor: str, op: tuple[str, int]) -> tuple[Any, Any]:
    verb, amount = op
    if verb == "inc":
        return c.increment(actor, amount), m.apply(actor, amount)
    return c.decrement(actor, amount), m.apply(actor, amount, "-")


ORSET = Kind(
    "ORSet",
    ORSet,
    lambda log: ReferenceORSet(),
    st.tuples(st.sampled_from(["add", "add", "remove"]), elements),
    _apply_orset,
)
#: The same ORSet, its elements moved into the columns from two recent ones, removals found by index.
ORSET_COLUMNS = replace(ORSET, name="ORSet-columns", compact_min=2)
GCOUNTER = Kind(
    "GCounter",
    GCounter,
    lambda log: ReferenceCounter(log),
    st.tuples(st.just("inc"), amounts),
    _apply_counter,
)
PNCOUNTER = Kind(
    "PNCounter",
    PNCounter,
    lambda log: ReferenceCounter(log),
    st.tuples(st.sampled_from(["inc", "dec"]), amounts),
    _apply_counter,
)
KINDS = [ORSET, ORSET_COLUMNS, GCOUNTER, PNCOUNTER]


@st.composite
def histories(draw: st.DrawFn, kind: Kind, max_replicas: int = 4) -> tuple[list[Any], list[Any]]:
    """Replica states and every delta they produced, after random operations and merges."""
    n = draw(st.integers(1, max_replicas))
    replicas = [kind.new() for _ in range(n)]
    log: dict[str, list[int]] = {}
    models = [kind.new_model(log) for _ in range(n)]
    deltas: list[Any] = []
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.integers(0, n - 1))
        if n > 1 and draw(st.booleans()) and draw(st.booleans()):
            j = draw(st.integers(0, n - 1))
            replicas[i].merge(replicas[j].copy())
        else:
            delta, _ = kind.apply(replicas[i], models[i], f"r{i}", draw(kind.ops))
            deltas.append(delta)
    return replicas, deltas
