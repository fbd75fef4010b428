"""``likes restore --from mysql``: rebuild nodes from the MySQL checkpoint after every disk is gone.

The item states MySQL keeps are written into the node's log as ordinary records, so the next start
replays them like any other (bad ones are skipped and reported there) and anti-entropy spreads them.
The node's data directory is locked meanwhile, so a running node cannot be restored under its feet;
its identity is left alone (a lost directory gets a new actor id at the next start, as it must).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from node.checkpoint import MysqlSink
from node.config import ClusterConfig
from node.durable.datadir import NodeDataDir
from node.durable.wal import Pair, WriteAheadLog
from node.errors import ConfigError

#: Item states per log record while restoring.
RESTORE_CHUNK = 1_000


def restore_from_mysql(config: ClusterConfig, names: list[str], *, out: TextIO = sys.stdout) -> int:
    """Write every item state of the MySQL checkpoint into the logs of nodes ``names``."""
    settings = config.checkpoint.with_environment()
    if settings.mysql_url is None:
        raise ConfigError("checkpoint.mysql_url: not set (nor LIKES_MYSQL_URL): nothing to restore from")
    for name in names:
        with NodeDataDir(config.storage.data_dir, config.node(name).name) as data_dir:
            wal = WriteAheadLog(data_dir.path / "wal")
            wal.open()
            items = asyncio.run(_copy(MysqlSink(settings.mysql_url, timeout=settings.timeout_ms / 1000), wal))
            print(f"{name}: restored {items} items from MySQL into {data_dir.path / 'wal'}", file=out)
    return 0


async def _copy(sink: MysqlSink, wal: WriteAheadLog) -> int:
    await sink.open()
    wal.start()
    items = 0
    chunk: list[Pair] = []
    try:
        async for pair in sink.load_states():
            chunk.append(pair)
            items += 1
            if len(chunk) >= RESTORE_CHUNK:
                await wal.append(chunk)
                chunk = []
        if chunk:
            await wal.append(chunk)
    finally:
        await wal.close()
        await sink.close()
    return items
