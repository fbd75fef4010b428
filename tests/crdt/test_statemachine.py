"""One state machine for every CRDT type: replicas, operations, stale merges, codec round trips.

After every delivery (a delta or a stale full state, duplicated, late or early) each replica's value
equals its reference model's value for the same deliveries, and encodings round-trip exactly.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt import decode, encode
from tests.crdt.kinds import GCOUNTER, ORSET, ORSET_COLUMNS, PNCOUNTER, Kind

REPLICAS = 3


class CRDTMachine(RuleBasedStateMachine):
    """Replicas of one CRDT type and their models, exchanging deltas and stale states."""

    kind: Kind

    def __init__(self) -> None:
        super().__init__()
        log: dict[str, list[int]] = {}
        self.replicas = [self.kind.new() for _ in range(REPLICAS)]
        self.models = [self.kind.new_model(log) for _ in range(REPLICAS)]
        self.deltas: list[tuple[Any, Any]] = []
        self.snapshots: list[tuple[Any, Any]] = []

    @rule(data=st.data(), i=st.integers(0, REPLICAS - 1))
    def operate(self, data: st.DataObject, i: int) -> None:
        op = data.draw(self.kind.ops)
        self.deltas.append(self.kind.apply(self.replicas[i], self.models[i], f"r{i}", op))

    @precondition(lambda self: self.deltas)
    @rule(data=st.data(), i=st.integers(0, REPLICAS - 1))
    def deliver_delta(self, data: st.DataObject, i: int) -> None:
        """Any delta, in any order, any number of times: no causal delivery is assumed."""
        delta, model_delta = data.draw(st.sampled_from(self.deltas))
        self.replicas[i].merge(delta)
        self.models[i].merge(model_delta)

    @rule(i=st.integers(0, REPLICAS - 1))
    def snapshot(self, i: int) -> None:
        self.snapshots.append((self.replicas[i].copy(), self.models[i].copy()))

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data(), i=st.integers(0, REPLICAS - 1))
    def merge_stale_state(self, data: st.DataObject, i: int) -> None:
        state, model = data.draw(st.sampled_from(self.snapshots))
        self.replicas[i].merge(state)
        self.models[i].merge(model)
        assert self.replicas[i].value() == self.models[i].value()

    @rule(i=st.integers(0, REPLICAS - 1), j=st.integers(0, REPLICAS - 1))
    def merge_current_state(self, i: int, j: int) -> None:
        self.replicas[i].merge(self.replicas[j].copy())
        self.models[i].merge(self.models[j].copy())
        assert self.replicas[i].value() == self.models[i].value()

    @rule(i=st.integers(0, REPLICAS - 1))
    def codec_round_trip(self, i: int) -> None:
        """Carry on with the decoded replica, so decoded values are exercised as much as built ones."""
        data = encode(self.replicas[i])
        decoded = decode(data)
        assert decoded == self.replicas[i]
        assert encode(decoded) == data
        self.replicas[i] = decoded

    @invariant()
    def values_match_models(self) -> None:
        for replica, model in zip(self.replicas, self.models, strict=True):
            assert replica.value() == model.value()

    def teardown(self) -> None:
        """Full-state anti-entropy at the end: every replica ends equal to the join of all."""
        if not hasattr(self, "replicas"):
            return
        everything = self.kind.new()
        for replica in self.replicas:
            everything.merge(replica)
        for replica in self.replicas:
            replica.merge(everything)
            assert replica == everything
            assert encode(replica) == encode(everything)


class ORSetMachine(CRDTMachine):
    kind = ORSET


class ORSetColumnsMachine(CRDTMachine):
    """The ORSet with its elements in the columns (``ORSET_COLUMNS``) for the whole run."""

    kind = ORSET_COLUMNS

    def __init__(self) -> None:
        self.layout = ExitStack()
        self.layout.enter_context(self.kind.configured())
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.layout.close()


class GCounterMachine(CRDTMachine):
    kind = GCOUNTER


class PNCounterMachine(CRDTMachine):
    kind = PNCOUNTER


TestORSetMachine = ORSetMachine.TestCase
TestORSetColumnsMachine = ORSetColumnsMachine.TestCase
TestGCounterMachine = GCounterMachine.TestCase
TestPNCounterMachine = PNCounterMachine.TestCase
