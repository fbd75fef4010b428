"""Pure, delta-enabled CRDTs for the like service and their versioned codec.

No asyncio, sockets or files here: values in, values out.
"""

from crdt.codec import CRDT, Tag, decode, encode
from crdt.context import CausalContext
from crdt.errors import CodecError, CRDTError
from crdt.gcounter import GCounter
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.protocol import ReplicatedData

__all__ = [
    "CRDT",
    "CRDTError",
    "CausalContext",
    "CodecError",
    "GCounter",
    "ORSet",
    "PNCounter",
    "ReplicatedData",
    "Tag",
    "decode",
    "encode",
]
