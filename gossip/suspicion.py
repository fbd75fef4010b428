"""Suspicion timers: a suspect that does not refute in time is declared dead (memberlist's ``suspicion.go``).

SWIM's suspicion state trades detection time for accuracy: a member that missed a probe because of a
pause or a lossy link gets ``suspicion_timeout`` seconds to hear of the suspicion and refute it with
a higher incarnation. The timeout is fixed; Lifeguard's shortening by independent confirmations is a
refinement this cluster size does not need yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Suspicions:
    """One timer per suspected member, tied to the incarnation it was suspected at."""

    __slots__ = ("_on_expiry", "_timeout", "_timers")

    def __init__(self, timeout: float, on_expiry: Callable[[str, int], None]) -> None:
        self._timeout = timeout
        self._on_expiry = on_expiry
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._timers

    def start(self, name: str, incarnation: int) -> None:
        """Start the clock on ``name``; a running timer keeps its deadline (no resetting by repeats)."""
        running = self._timers.get(name)
        if running is not None:
            self._timers[name] = (max(incarnation, running[0]), running[1])
            return
        handle = asyncio.get_running_loop().call_later(self._timeout, self._expire, name)
        self._timers[name] = (incarnation, handle)

    def cancel(self, name: str) -> None:
        """Forget the suspicion of ``name`` (refuted, or declared dead another way)."""
        running = self._timers.pop(name, None)
        if running is not None:
            running[1].cancel()

    def clear(self) -> None:
        """Cancel every timer (shutdown)."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _expire(self, name: str) -> None:
        running = self._timers.pop(name, None)
        if running is not None:
            self._on_expiry(name, running[0])
