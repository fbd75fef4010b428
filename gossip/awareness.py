"""Local health awareness (Lifeguard; memberlist's ``awareness.go``): a slow member probes gently.

SWIM assumes the prober is healthy. A member whose own event loop is starved (CPU saturation, a long
pause) sees every probe time out and accuses healthy peers, and under load every member of a small
cluster can be that member. So each member keeps a health score from 0 (healthy) to ``MAX_SCORE``:
it rises when a probe fails outright, when the member has to refute a suspicion of itself, and when
its own probe timer fires late; it falls with every acked probe. Probe timeouts and the probe
interval are multiplied by ``score + 1``, so an overloaded member waits longer before suspecting
anyone and probes less often. Suspicion timeouts are not scaled: a healthy member still declares a
really dead one dead on time.
"""

from __future__ import annotations

#: The largest score: timeouts grow at most ``MAX_SCORE + 1`` times.
MAX_SCORE = 8


class Awareness:
    """This member's own health score."""

    __slots__ = ("score",)

    def __init__(self) -> None:
        self.score = 0

    def apply(self, delta: int) -> None:
        """Raise (positive) or lower (negative) the score, within [0, MAX_SCORE]."""
        self.score = min(MAX_SCORE, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        """A timeout stretched by the current score."""
        return seconds * (self.score + 1)
