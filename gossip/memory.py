"""An in-memory network for tests: loss, duplication, delay, reordering, partitions and crashes.

The fake in memberlist's ``mock_transport.go`` and trio's ``testing/_fake_net.py``, with faults.
Every member gets a ``MemoryTransport`` from one ``MemoryNetwork``; frames are delivered on the event
loop after ``delay`` plus up to ``jitter`` seconds (so jitter reorders), each one lost with
probability ``drop_rate`` and delivered twice with probability ``duplicate_rate``. All randomness
comes from one seeded generator. Fault settings are plain attributes, changeable mid-test.

A handler exception other than ``FrameError`` is recorded in ``handler_errors`` rather than lost in
the loop's exception handler, so a test can assert that none happened.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable, Mapping

from gossip.errors import FrameError
from gossip.transport import Address, FrameHandler


class MemoryNetwork:
    """A simulated network between ``MemoryTransport`` endpoints."""

    def __init__(
        self,
        *,
        seed: int = 0,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        max_frame_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.rng = random.Random(seed)
        #: Probability that a frame is lost.
        self.drop_rate = drop_rate
        #: Probability that a delivered frame is delivered a second time (at its own delay).
        self.duplicate_rate = duplicate_rate
        #: Seconds every frame spends in flight.
        self.delay = delay
        #: Extra seconds in flight, uniform in [0, jitter], drawn per frame: this reorders frames.
        self.jitter = jitter
        self.max_frame_bytes = max_frame_bytes
        #: frames_sent, bytes_sent, frames_delivered, frames_lost, frames_blocked, frames_duplicated.
        self.counters: Counter[str] = Counter()
        #: Bytes sent, by sender address.
        self.bytes_sent_by: Counter[Address] = Counter()
        #: Unexpected exceptions raised by receive handlers.
        self.handler_errors: list[BaseException] = []
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._stopped: set[Address] = set()
        self._groups: dict[Address, int] = {}

    def transport(self, address: Address) -> MemoryTransport:
        """A new endpoint at ``address`` (it receives once started)."""
        return MemoryTransport(self, address)

    # -- faults -----------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: members of different groups cannot talk; unlisted members reach all."""
        self._groups = {address: index for index, group in enumerate(groups) for address in group}

    def heal(self) -> None:
        """Remove every partition."""
        self._groups = {}

    def stop(self, address: Address) -> None:
        """Crash ``address`` off the network: it neither sends nor receives, frames in flight die."""
        self._stopped.add(address)

    def start(self, address: Address) -> None:
        """Bring a stopped member back."""
        self._stopped.discard(address)

    def reachable(self, source: Address, destination: Address) -> bool:
        """Whether a frame can go from ``source`` to ``destination`` right now."""
        if source in self._stopped or destination in self._stopped:
            return False
        if destination not in self._endpoints:
            return False
        source_group = self._groups.get(source)
        destination_group = self._groups.get(destination)
        return source_group is None or destination_group is None or source_group == destination_group

    # -- delivery ---------------------------------------------------------------------------------

    def _register(self, endpoint: MemoryTransport) -> None:
        if endpoint.address in self._endpoints:
            raise ValueError(f"address {endpoint.address} already in use")
        self._endpoints[endpoint.address] = endpoint

    def _unregister(self, endpoint: MemoryTransport) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]

    def _send(self, source: Address, destination: Address, frame: bytes) -> None:
        self.counters["frames_sent"] += 1
        self.counters["bytes_sent"] += len(frame)
        self.bytes_sent_by[source] += len(frame)
        if not self.reachable(source, destination):
            self.counters["frames_blocked"] += 1
            return
        if self.rng.random() < self.drop_rate:
            self.counters["frames_lost"] += 1
            return
        copies = 2 if self.rng.random() < self.duplicate_rate else 1
        self.counters["frames_duplicated"] += copies - 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            wait = self.delay + self.rng.uniform(0.0, self.jitter)
            loop.call_later(wait, self._deliver, source, destination, frame)

    def _deliver(self, source: Address, destination: Address, frame: bytes) -> None:
        endpoint = self._endpoints.get(destination)
        if endpoint is None or not self.reachable(source, destination):
            self.counters["frames_blocked"] += 1
            return
        self.counters["frames_delivered"] += 1
        endpoint._receive(frame)


class MemoryTransport:
    """One member's endpoint on a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self._handler: FrameHandler | None = None
        self._counters: Counter[str] = Counter(frames_rejected=0, frames_dropped=0)

    @property
    def address(self) -> Address:
        """Where this endpoint receives."""
        return self._address

    def counters(self) -> Mapping[str, int]:
        """frames_rejected (handler said FrameError or oversized), frames_dropped (sent while stopped)."""
        return dict(self._counters)

    async def start(self, handler: FrameHandler) -> None:
        """Attach to the network and deliver frames to ``handler``."""
        self._network._register(self)
        self._handler = handler

    async def stop(self) -> None:
        """Detach from the network."""
        self._network._unregister(self)
        self._handler = None

    def send(self, address: Address, frame: bytes) -> None:
        """Hand ``frame`` to the network for ``address``."""
        if self._handler is None:
            self._counters["frames_dropped"] += 1
            return
        self._network._send(self._address, address, bytes(frame))

    def _receive(self, frame: bytes) -> None:
        if self._handler is None:
            return
        if len(frame) > self._network.max_frame_bytes:
            self._counters["frames_rejected"] += 1
            return
        try:
            self._handler(frame)
        except FrameError:
            self._counters["frames_rejected"] += 1
        except Exception as exc:  # recorded for the test to assert on, never swallowed silently
            self._network.handler_errors.append(exc)
