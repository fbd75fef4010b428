"""What the SQL sinks share: ``like_records`` changes of a checkpoint, times as SQL text, chunking.

SQLite and MySQL keep the same tables, so they plan the same row changes: upsert the liked users
(a re-like clears ``is_canceled``, ``created_at`` stays the first like) and cancel the unliked ones.
A ``full`` checkpoint is compared with the users the store holds as liking: only the missing are
upserted and only the others are canceled, so rewriting a large item touches just what differs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from node.checkpoint.sink import ItemCheckpoint

_T = TypeVar("_T")

_EPOCH = datetime(1970, 1, 1)
#: The last millisecond a DATETIME(3) can hold (9999-12-31 23:59:59.999 UTC).
MAX_TIME_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class RecordChanges:
    """The ``like_records`` rows one checkpoint changes."""

    #: (user, liked-at ms) to insert, or to un-cancel if canceled, ascending by user.
    likes: list[tuple[int, int]]
    #: Users whose row to cancel if it is not already, ascending.
    cancels: list[int]


def record_changes(checkpoint: ItemCheckpoint, active: set[int] | None) -> RecordChanges:
    """The row changes of ``checkpoint``; ``active`` (users stored as liking) is needed when full."""
    if checkpoint.full:
        if active is None:
            raise ValueError("a full checkpoint needs the users the store holds as liking")
        likes = sorted((user, at) for user, at in checkpoint.liked.items() if user not in active)
        cancels = sorted(active.difference(checkpoint.liked))
    else:
        likes = sorted(checkpoint.liked.items())
        cancels = sorted(set(checkpoint.unliked).difference(checkpoint.liked))
    return RecordChanges(likes, cancels)


def sql_time(ms: int) -> str:
    """``ms`` since the epoch as DATETIME(3) text in UTC (exact: no float on the way).

    Arithmetic rather than ``strftime``, which would take a large share of writing a large item's
    like_records.
    """
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"time {ms} ms is outside what DATETIME(3) holds")
    days, ms_of_day = divmod(ms, 86_400_000)
    seconds, millis = divmod(ms_of_day, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_date(days)} {hour:02d}:{minute:02d}:{second:02d}.{millis:03d}"


@functools.lru_cache(maxsize=16)
def new_like_times(ms: int) -> tuple[str, str]:
    """``created_at`` and ``updated_at`` of a new like_records row: one time, formatted once (a
    checkpoint gives every like of a batch the same time, so it is formatted once per batch)."""
    text = sql_time(ms)
    return text, text


@functools.lru_cache(maxsize=1024)
def _date(days: int) -> str:
    """The date ``days`` after the epoch, as ``YYYY-MM-DD`` (a batch spans few days: cached)."""
    return (_EPOCH + timedelta(days=days)).date().isoformat()


def time_ms(value: datetime | str) -> int:
    """Milliseconds since the epoch of a stored DATETIME(3) (a datetime, or its text in SQLite)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (moment.replace(tzinfo=None) - _EPOCH) // timedelta(milliseconds=1)


def now_ms() -> int:
    """The wall clock in ms: ``updated_at`` of cancels and item rows, which carry no time of their own."""
    return time.time_ns() // 1_000_000


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of at most ``size`` items: rows per statement, fields per command."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def flat(rows: Iterable[Iterable[_T]]) -> list[_T]:
    """The parameters of a multi-row statement, row after row."""
    return [value for row in rows for value in row]
