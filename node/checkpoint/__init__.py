"""Checkpoint sinks: where merged item state is copied to (SQLite, Redis, MySQL)."""

from node.checkpoint.mysql_sink import MysqlSink
from node.checkpoint.redis_sink import RedisSink
from node.checkpoint.sink import DEFAULT_TIMEOUT, CheckpointSink, ItemCheckpoint, StateSink
from node.checkpoint.sqlite_sink import SqliteSink

__all__ = [
    "DEFAULT_TIMEOUT",
    "CheckpointSink",
    "ItemCheckpoint",
    "MysqlSink",
    "RedisSink",
    "SqliteSink",
    "StateSink",
]
