"""Every error gossip raises, under one root."""


class GossipError(Exception):
    """Root of the errors raised by the gossip package."""


class FrameError(GossipError):
    """A frame is malformed, oversized, of an unknown type or fails authentication."""


class FrameAuthError(FrameError):
    """A frame's tag does not verify under any key of the keyring (a stranger, or a removed key)."""


class PayloadError(GossipError):
    """A replica payload cannot be decoded or merged; raised by a ``Replica``."""


class TooFewPeers(GossipError):
    """Fewer peers are alive than a replicated write needs: it is answered at once, not awaited."""

    def __init__(self, alive: int, needed: int) -> None:
        super().__init__(f"{needed} peer(s) must confirm and {alive} is alive")
        self.alive = alive
        self.needed = needed
