"""``kill -9`` while the item store is being written loses nothing acknowledged and invents nothing.

A real ``likes node`` alone (so whatever it holds after a restart came from its own disk), flushing to
its item store every few hundred changed items while batches of likes on new items pour in; it is
killed in the middle of that, three times, and each start must hold every acknowledged like and no
like never attempted.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.node.processes import NodeProcesses

pytestmark = pytest.mark.cluster

#: Likes per batch request, each on a new item; batches per round at most.
BATCH = 200
BATCHES = 250
ROUNDS = 3


class Batches:
    """Batches of one like per new item through one node, in a thread, until stopped or done."""

    def __init__(self, solo: NodeProcesses, first: int) -> None:
        self.acked: set[int] = set()
        self.attempted: set[int] = set()
        self._solo, self._first = solo, first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for batch in range(BATCHES):
            if self._stop.is_set():
                return
            ids = range(self._first + batch * BATCH, self._first + (batch + 1) * BATCH)
            self.attempted.update(ids)
            ops = [{"op": "like", "type": "post", "id": str(i), "user": str(i)} for i in ids]
            try:
                status, _ = self._solo.request("solo", "POST", "/v1/batch", {"ops": ops})
            except OSError:  # killed under it: indeterminate
                return
            if status != 200:
                return
            self.acked.update(ids)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def flushes(solo: NodeProcesses) -> int:
    return int(solo.call("solo", "GET", "/v1/cluster")["wal"]["item_store"]["flushes"])


def counts(solo: NodeProcesses, ids: list[int]) -> list[int]:
    answer = solo.call("solo", "POST", "/v1/counts", {"items": [{"type": "post", "id": i} for i in ids]})
    return [int(count) for count in answer["counts"]]


def test_kill_9_while_flushing_loses_no_acknowledged_like(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",), extra="storage: {flush_items: 300}")
    acked: set[int] = set()
    attempted: set[int] = set()
    try:
        solo.start("solo")
        for round_ in range(ROUNDS):
            load = Batches(solo, 1_000_000 * (round_ + 1))
            load.start()
            try:
                target = flushes(solo) + 2
                solo.eventually(lambda: flushes(solo) >= target, "flushes under load")  # noqa: B023
                solo.kill("solo")
            finally:
                load.stop()
            acked |= load.acked
            attempted |= load.attempted
            assert load.acked, "no batch was acknowledged before the kill"
            solo.start("solo")
            held = sorted(acked)
            for start in range(0, len(held), 1000):
                assert counts(solo, held[start : start + 1000]) == [1] * len(held[start : start + 1000])
            beyond = list(range(max(attempted) + 1, max(attempted) + 201))
            assert counts(solo, beyond) == [0] * len(beyond)  # never attempted: nowhere
            # Each like counted once: the acknowledged ones, and some of those in flight at the kill.
            total = solo.call("solo", "GET", "/v1/cluster")["likes"]
            assert len(acked) <= total <= len(attempted)
    finally:
        solo.stop_all()
