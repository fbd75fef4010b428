"""The Redis sink: the read model the existing like services read counts and statuses from.

Keys, per item (``prefix`` prepended, so several clusters or tests can share one Redis):

    like:count:{type}:{id}      string: the like count
    like:status:{type}:{id}     hash: user -> liked-at (ms since the epoch) of every user who likes it
    like:counters:{type}:{id}   hash: counter name -> value

Idempotence: liked users are set with HSETNX semantics (a user who already likes the item keeps the
liked-at of the first like; a small Lua script does HSETNX for up to 1,000 fields per call, since
HSETNX itself takes one), unliked users are HDEL'd, counters and the count are overwritten. A
``full`` checkpoint first scans the status hash (HSCAN), deletes every other user and sets only the
likers the hash lacks.

A batch goes out as one pipeline (no MULTI: every command is idempotent, so a retry repairs a batch
cut halfway) sent in rounds of about ``FIELDS_PER_ROUND`` fields, so no single round trip is large
enough to outlast the timeout. The client neither retries nor waits past ``timeout``; after a
failure it is thrown away and the next call connects afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from node.checkpoint.records import chunks, flat
from node.checkpoint.sink import DEFAULT_TIMEOUT, ItemCheckpoint
from node.errors import SinkUnavailable
from node.state.item import ItemKey

#: HSETNX for many fields of one hash; returns how many were new.
_HSETNX_MANY = """
local added = 0
for i = 1, #ARGV, 2 do
    added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return added
"""
#: Fields per command (HDEL, HSET, the HSETNX script).
FIELDS_PER_COMMAND = 1_000
#: Fields asked of each HSCAN step (a hint: Redis may return more or fewer).
FIELDS_PER_SCAN = 5_000
#: Fields queued before the pipeline is sent and its replies awaited.
FIELDS_PER_ROUND = 20_000

#: What a driver or network failure looks like; all of it becomes SinkUnavailable.
_FAILURES = (RedisError, OSError, TimeoutError)


class RedisSink:
    """Checkpoints into the Redis read model (count string, status hash, counters hash)."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        """``url``: ``redis://[user[:password]@]host[:port][/db]`` (or rediss://, unix://).

        ``prefix`` goes in front of every key; ``timeout`` bounds each connect and each round trip,
        in seconds.
        """
        if timeout <= 0:
            raise ValueError("redis sink: timeout must be > 0")
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._client: Redis | None = None
        self._closed = False
        #: Batches go one at a time, so two batches of one item never interleave.
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Check that Redis answers (there is no schema to create)."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._connected().ping()
        except _FAILURES as exc:
            raise await self._unavailable(exc) from exc

    async def write(self, batch: Sequence[ItemCheckpoint]) -> None:
        """Apply ``batch`` through one pipeline, in rounds."""
        if not batch:
            return
        async with self._write_lock:
            try:
                await self._write(self._connected(), batch)
            except _FAILURES as exc:
                raise await self._unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connections; later calls raise SinkUnavailable."""
        self._closed = True
        await self._drop_client()

    async def read_item(self, key: ItemKey) -> tuple[int, set[int]]:
        """The stored count and the users in the status hash."""
        count_key, status_key, _ = self._keys(key)
        try:
            client = self._connected()
            async with asyncio.timeout(self._timeout):
                count = await client.get(count_key)
            fields = await self._fields(client, status_key)
        except _FAILURES as exc:
            raise await self._unavailable(exc) from exc
        users = {_user(field) for field in fields}
        return (0 if count is None else int(count)), {user for user in users if user is not None}

    # -- internals ---------------------------------------------------------------------------------

    async def _write(self, client: Redis, batch: Sequence[ItemCheckpoint]) -> None:
        pipe = client.pipeline(transaction=False)
        queued = 0

        async def queue(fields: int) -> None:
            """Count what was just queued; send the round once it is big enough."""
            nonlocal queued
            queued += fields
            if queued >= FIELDS_PER_ROUND:
                await self._send(pipe)
                queued = 0

        for checkpoint in batch:
            count_key, status_key, counters_key = self._keys(checkpoint.key)
            if checkpoint.full:
                await self._send(pipe)  # the scan must see what this batch already wrote
                queued = 0
                stale: list[bytes] = []
                held: set[int] = set()
                for field in await self._fields(client, status_key):
                    user = _user(field)
                    if user is not None and user in checkpoint.liked:
                        held.add(user)
                    else:
                        stale.append(field)
                # Only the users missing (HSETNX would keep the others anyway): a full checkpoint of a hot
                # post lists a million, and the hash already holds nearly all of them.
                news = sorted((user, at) for user, at in checkpoint.liked.items() if user not in held)
                for fields in chunks(stale, FIELDS_PER_COMMAND):
                    pipe.hdel(status_key, *fields)
                    await queue(len(fields))
            else:
                news = sorted(checkpoint.liked.items())
            unliked = sorted(set(checkpoint.unliked).difference(checkpoint.liked))
            for users in chunks(unliked, FIELDS_PER_COMMAND):
                pipe.hdel(status_key, *map(str, users))
                await queue(len(users))
            for pairs in chunks(news, FIELDS_PER_COMMAND):
                pipe.eval(_HSETNX_MANY, 1, status_key, *flat(pairs))
                await queue(len(pairs))
            if checkpoint.counters:  # a handful per item (the config caps them)
                values: dict[FieldT, EncodableT] = {k: v for k, v in checkpoint.counters.items()}
                pipe.hset(counters_key, mapping=values)
            pipe.set(count_key, checkpoint.count)
            await queue(1 + len(checkpoint.counters))
        await self._send(pipe)

    async def _send(self, pipe: Pipeline) -> None:
        """Send what the pipeline holds and wait for the replies, within the timeout."""
        if len(pipe):
            async with asyncio.timeout(self._timeout):
                await pipe.execute()

    async def _fields(self, client: Redis, key: str) -> list[bytes]:
        """Every field of the hash ``key``, an HSCAN step (each within the timeout) at a time."""
        found: set[bytes] = set()  # HSCAN may return a field twice
        cursor = 0
        while True:
            async with asyncio.timeout(self._timeout):
                cursor, page = await client.hscan(key, cursor, count=FIELDS_PER_SCAN)
            found.update(f if isinstance(f, bytes) else f.encode() for f in page)
            if cursor == 0:
                return sorted(found)

    def _keys(self, key: ItemKey) -> tuple[str, str, str]:
        item = f"{key.content_type}:{key.content_id}"
        prefix = self._prefix
        return f"{prefix}like:count:{item}", f"{prefix}like:status:{item}", f"{prefix}like:counters:{item}"

    def _connected(self) -> Redis:
        if self._closed:
            raise SinkUnavailable(f"redis: the sink is closed ({self._where()})")
        if self._client is None:
            self._client = Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # We retry whole batches ourselves; a driver retry would only stretch the timeout.
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    async def _unavailable(self, exc: BaseException) -> SinkUnavailable:
        """Throw the client away (its connections may be half-used) and describe the failure."""
        await self._drop_client()
        return SinkUnavailable(f"redis {self._where()}: {type(exc).__name__}: {exc}")

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                async with asyncio.timeout(self._timeout):
                    await client.aclose()

    def _where(self) -> str:
        """The url without its password, for messages."""
        head, at, tail = self._url.rpartition("@")
        return self._url if not at else head.split("//", 1)[0] + "//…@" + tail


def _user(field: bytes) -> int | None:
    """The user a status-hash field names; None for a stray field that is not a number."""
    try:
        return int(field)
    except ValueError:
        return None
