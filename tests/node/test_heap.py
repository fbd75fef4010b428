"""Freed memory goes back to the OS (``node.process.heap``), on glibc, in a process of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from node.process import heap

glibc_only = pytest.mark.skipif(heap._TRIM is None, reason="the C library has no malloc_trim (not glibc)")

#: Allocates 200 MB in 1 KB blocks (above pymalloc's 512 B: from malloc), frees 15 of every 16 (the
#: kept ones pin the heap, so malloc cannot give the free space back on its own), then trims.
_FRAGMENT_AND_TRIM = """
import json, os
from node.process import heap

def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

assert heap.one_arena()
blocks = [bytes(1000) + i.to_bytes(8, "big") for i in range(200_000)]
kept = blocks[::16]
del blocks
freed = rss()
trimmed = heap.trim()
print(json.dumps({"freed": freed, "trimmed": trimmed, "after": rss(), "kept": len(kept)}))
"""


@glibc_only
def test_trim_gives_freed_pages_in_the_middle_of_the_heap_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_AND_TRIM], capture_output=True, text=True, timeout=60, check=True
    )
    figures = json.loads(done.stdout)
    assert figures["trimmed"] is True
    # 15/16 of 200 MB was free but resident; trimming returns most of it.
    assert figures["freed"] - figures["after"] > 100_000_000, figures


async def test_trims_periodically_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append(None) or 1)
    task = asyncio.create_task(heap.trim_periodically(0.01))
    await asyncio.sleep(0.2)
    assert len(calls) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == stopped
