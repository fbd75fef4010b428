"""The like-service process: config, store, HTTP API and CLI. Wires ``crdt`` and ``gossip`` together."""

from node.config import ClusterConfig, NodeSpec, load_config
from node.errors import ConfigError, DataDirError, NodeError, RequestError, StartupError
from node.state.item import Item, ItemKey
from node.state.store import LikeResult, LikeStore

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DataDirError",
    "Item",
    "ItemKey",
    "LikeResult",
    "LikeStore",
    "NodeError",
    "NodeSpec",
    "RequestError",
    "StartupError",
    "load_config",
]
