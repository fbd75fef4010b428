"""Giving freed memory back to the operating system.

glibc's malloc keeps what a process frees for reuse and returns to the OS only the free memory at
the top of its heap. A node's bursts (a checkpoint's rows, a hot post's state encoded, a batch of
requests parsed) free megabytes in the middle of the heap, so without help a node's RSS stays at
its peak, much of it free memory.
``malloc_trim(0)`` hands every free page back (``madvise``); it takes tens of microseconds once
little is free (under a millisecond after a million-like load), so a node calls it every few seconds.
Where the C library has no ``malloc_trim`` (musl, macOS) this does nothing.

A node also keeps one malloc arena for all its threads (``one_arena``): glibc gives each thread that
allocates its own arena, and what the checkpoint thread frees in its arena is reused only by that
thread, so a node that checkpoints a hot post grows more per like with an arena per thread than with
one, even after trims. Its threads hold the GIL for most of their allocations, so one arena costs them
little waiting.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds between two trims.
TRIM_INTERVAL = 5.0
#: glibc's ``mallopt`` parameter for the most arenas a process may have.
_M_ARENA_MAX = -8


def _glibc(name: str, *argtypes: type[ctypes._SimpleCData[int]]) -> Callable[..., int] | None:
    """The C library's function ``name`` (returning an int), or None where it has none."""
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_TRIM = _glibc("malloc_trim", ctypes.c_size_t)
_MALLOPT = _glibc("mallopt", ctypes.c_int, ctypes.c_int)


def one_arena() -> bool:
    """Every thread started from now on allocates from the main arena; whether the C library
    agreed. Call it before starting threads."""
    return _MALLOPT is not None and bool(_MALLOPT(_M_ARENA_MAX, 1))


def trim() -> bool:
    """Return the heap's free pages to the OS; whether anything was returned (False where the C
    library cannot)."""
    return _TRIM is not None and bool(_TRIM(0))


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """``trim`` every ``interval`` seconds, until cancelled."""
    if _TRIM is None:
        log.info("the C library has no malloc_trim: freed memory stays with the process")
        return
    while True:
        await asyncio.sleep(interval)
        trim()
