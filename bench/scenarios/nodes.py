"""Reading the cluster: every node's counts of the items a load touched, until they are what the
answers acknowledged and the nodes agree (bounded)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from bench.common import session
from bench.scenarios.spec import ScenarioError

#: Items per ``POST /v1/counts`` when the harness reads counts (the shipped ``api.max_count_items``).
COUNT_CHUNK = 1000
JSON_HEADERS = {"Content-Type": "application/json"}


async def cluster_views(client: aiohttp.ClientSession, urls: Sequence[str]) -> list[dict[str, Any]]:
    async def one(url: str) -> dict[str, Any]:
        async with client.get(f"{url}/v1/cluster") as response:
            view: dict[str, Any] = await response.json()
            return view

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def item_counts(
    client: aiohttp.ClientSession, url: str, content_type: str, ids: Sequence[int]
) -> list[int]:
    """Every item's count on one node, ``COUNT_CHUNK`` items per request."""
    found: list[int] = []
    for first in range(0, len(ids), COUNT_CHUNK):
        refs = [{"type": content_type, "id": i} for i in ids[first : first + COUNT_CHUNK]]
        async with client.post(
            f"{url}/v1/counts", data=orjson.dumps({"items": refs}), headers=JSON_HEADERS
        ) as response:
            if response.status != 200:
                raise ScenarioError(
                    f"POST {url}/v1/counts answered {response.status}: {await response.text()}"
                )
            found += (await response.json())["counts"]
    return found


def mismatches(
    counts: Sequence[int], ids: Sequence[int], expected: Mapping[int, int], uncertain: Mapping[int, int]
) -> int:
    """Items whose count is not what the answers say (within their uncertain operations, if any)."""
    wrong = 0
    for item, count in zip(ids, counts, strict=True):
        want, slack = expected.get(item, 0), uncertain.get(item, 0)
        if not want - slack <= count <= want + slack:
            wrong += 1
    return wrong


async def until_exact(
    urls: Sequence[str],
    content_type: str,
    ids: Sequence[int],
    expected: Mapping[int, int],
    uncertain: Mapping[int, int],
    timeout: float,
    started: float,
) -> dict[str, Any]:
    """Poll every node until each holds the expected counts and their fingerprints agree (bounded)."""
    interval = 0.05 if len(ids) <= COUNT_CHUNK else 0.5
    exact_at = agree_at = None
    per_node: list[list[int]] = []
    views: list[dict[str, Any]] = []
    async with session() as client:
        for _ in range(int(timeout / interval) + 2):
            if exact_at is None:
                per_node = list(
                    await asyncio.gather(*(item_counts(client, u, content_type, ids) for u in urls))
                )
                if all(mismatches(c, ids, expected, uncertain) == 0 for c in per_node):
                    exact_at = time.monotonic() - started
            if agree_at is None:
                views = await cluster_views(client, urls)
                if len({view["fingerprint"] for view in views}) == 1:
                    agree_at = time.monotonic() - started
            if (exact_at is not None and agree_at is not None) or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(interval)
    names = [view["node"]["name"] for view in views] if views else list(urls)
    nodes = {
        name: {
            "total": sum(counts),
            "mismatched_items": mismatches(counts, ids, expected, uncertain),
        }
        for name, counts in zip(names, per_node, strict=True)
    }
    return {
        "nodes": nodes,
        "exact": exact_at is not None,
        "exact_after_s": exact_at,
        "fingerprints_agree": agree_at is not None,
        "converge_s": agree_at,
    }


async def read_views(urls: Sequence[str]) -> list[dict[str, Any]]:
    async with session() as client:
        return await cluster_views(client, urls)


async def read_counts(url: str, content_type: str, ids: Sequence[int]) -> list[int]:
    async with session() as client:
        return await item_counts(client, url, content_type, ids)
