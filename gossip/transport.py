"""The transport contract: how frames move between members (memberlist's ``transport.go``).

Gossip is built to survive a bad network, so a transport promises little and the layers above rely on
nothing more:

- **best effort**: ``send`` never blocks and never raises for network reasons; a frame may be dropped
  (peer down, queue full, partition), duplicated, delayed or reordered relative to other frames;
- **whole frames**: a delivered frame is exactly the bytes that were sent, never a fragment;
- **bounded**: a frame longer than the transport's cap is rejected without reading it all;
- **rejections are counted**: when the handler raises ``FrameError`` the transport counts the frame
  under ``frames_rejected`` and may drop the connection it came on; nothing else happens.

Frames are opaque here; ``gossip.wire`` gives them meaning and authenticates them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

#: A member's network address: (host, port).
Address = tuple[str, int]

#: Called with each received frame; raises ``FrameError`` to reject it.
FrameHandler = Callable[[bytes], None]


class Transport(Protocol):
    """Moves frames to and from this member's address, best effort."""

    @property
    def address(self) -> Address:
        """The address peers reach this member at (the bound port once started)."""
        ...

    async def start(self, handler: FrameHandler) -> None:
        """Begin accepting frames, delivering each to ``handler``."""
        ...

    async def stop(self) -> None:
        """Stop accepting and sending; frames still queued are dropped."""
        ...

    def send(self, address: Address, frame: bytes) -> None:
        """Queue ``frame`` for ``address`` without blocking; silently dropped if it cannot go."""
        ...

    def counters(self) -> Mapping[str, int]:
        """The transport's own counts: at least ``frames_rejected`` and ``frames_dropped``."""
        ...
