"""Membership, failure detection, delta dissemination and anti-entropy for an opaque ``Replica``.

Imports nothing of the project: the node hands in a ``Replica`` and a ``GossipConfig``.
"""

from gossip.config import GossipConfig, Peer
from gossip.errors import FrameError, GossipError, PayloadError
from gossip.gossiper import Gossiper
from gossip.member import MemberInfo, MemberState
from gossip.memory import MemoryNetwork
from gossip.replica import Replica
from gossip.tcp import TcpTransport
from gossip.transport import Address, Transport

__all__ = [
    "Address",
    "FrameError",
    "GossipConfig",
    "GossipError",
    "Gossiper",
    "MemberInfo",
    "MemberState",
    "MemoryNetwork",
    "PayloadError",
    "Peer",
    "Replica",
    "TcpTransport",
    "Transport",
]
