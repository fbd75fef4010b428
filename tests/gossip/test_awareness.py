"""Local health awareness: a member whose probes fail stretches its timeouts, and heals back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gossip import MemoryNetwork
from gossip.awareness import MAX_SCORE, Awareness
from tests.gossip.conftest import Cluster, memory_cluster, wait_until

Start = Callable[[Cluster], Awaitable[Cluster]]


def test_the_score_stays_within_bounds_and_stretches_timeouts() -> None:
    awareness = Awareness()
    awareness.apply(-3)
    assert awareness.score == 0 and awareness.scale(0.2) == 0.2
    for _ in range(3 * MAX_SCORE):
        awareness.apply(1)
    assert awareness.score == MAX_SCORE
    assert awareness.scale(0.2) == 0.2 * (MAX_SCORE + 1)


async def test_failing_probes_raise_the_score_and_acked_probes_lower_it_again(started: Start) -> None:
    network = MemoryNetwork(seed=5)
    # Probe timeouts long enough that a loaded machine's late timers (which raise the score too) do
    # not outpace the acked probes that lower it.
    cluster = await started(
        memory_cluster(network, 2, suspicion_timeout=60.0, probe_interval=0.4, probe_timeout=0.2)
    )
    a, b = cluster.members
    await wait_until(lambda: a.state_of(b.name) == "alive", timeout=5, what="contact")
    network.partition([a.address], [b.address])
    await wait_until(lambda: a.gossiper.stats()["health_score"] >= 2, timeout=10, what="a raised score")
    network.heal()
    await wait_until(lambda: a.gossiper.stats()["health_score"] == 0, timeout=60, what="a healed score")
    assert a.state_of(b.name) == "alive"
