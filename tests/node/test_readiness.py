"""Liveness and readiness of a node whose write-ahead log refuses writes: ``/healthz`` stays 200 (the
node serves reads), ``/readyz`` answers 503 ``not_ready`` saying why, ``GET /v1/cluster`` and
``/metrics`` show the log's failure and its counts, and all of it clears once the log takes writes.

Most tests give a real ``WriteAheadLog`` the state a failure leaves (``failure``, ``failed_since``,
``failures``, ``recoveries``), so what is shown does not depend on when the node's disk probe runs;
one makes the disk fail for real (the live segment's descriptor becomes ``/dev/full``, the log's
directory unusable) and gives it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from node.durable.wal import WriteAheadLog
from node.http.api import DURABILITY
from tests.node.conftest import Client, fill_log_disk
from tests.node.test_metrics import scrape

ITEM = "/v1/items/post/1"
REASON = "the write-ahead log failed: [Errno 28] No space left on device"
#: 2026-11-23T06:57:13Z, as the reason's time is written.
FAILED_AT = 1795417033.25


async def answer(client: Client, path: str, method: str = "GET") -> tuple[int, Any]:
    response = await client.request(method, path)
    assert response.content_type == "application/json", path
    return response.status, orjson.loads(await response.read())


def fail(wal: WriteAheadLog, *, since: float = FAILED_AT, failures: int = 1, recoveries: int = 0) -> None:
    """Leave ``wal`` as a failed write or fsync leaves it."""
    wal.failure, wal.failed_since, wal.failures, wal.recoveries = REASON, since, failures, recoveries


def recover(wal: WriteAheadLog) -> None:
    """Leave ``wal`` as a successful probe of its disk leaves it."""
    wal.failure, wal.failed_since, wal.recoveries = None, None, wal.recoveries + 1


async def test_a_node_whose_log_takes_writes_is_live_and_ready(client: Client) -> None:
    assert await answer(client, "/healthz") == (200, {"status": "ok", "node": "n1"})
    assert await answer(client, "/readyz") == (200, {"ready": True, "node": "n1"})
    assert (await client.head("/readyz")).status == 200
    wal = (await answer(client, "/v1/cluster"))[1]["wal"]
    assert (wal["failure"], wal["failed_since"], wal["failures"], wal["recoveries"]) == (None, None, 0, 0)
    found = await scrape(client)
    assert found.families["likes_wal_failed"].type == "gauge"
    assert found.value("likes_wal_failed") == 0
    assert found.value("likes_wal_failures_total") == found.value("likes_wal_recoveries_total") == 0


async def test_a_failed_log_makes_the_node_unready_but_still_live(client: Client) -> None:
    await client.put(f"{ITEM}/likes/7")
    fail(client.app[DURABILITY].wal)

    assert await answer(client, "/healthz") == (200, {"status": "ok", "node": "n1"})
    assert await answer(client, ITEM) == (200, {"type": "post", "id": 1, "count": 1, "counters": {}})
    status, body = await answer(client, "/readyz")
    assert status == 503
    assert body == {
        "error": {"code": "not_ready", "message": f"no writes taken since 2026-11-23T06:57:13Z: {REASON}"}
    }
    assert (await client.head("/readyz")).status == 503
    wal = (await answer(client, "/v1/cluster"))[1]["wal"]
    assert (wal["failure"], wal["failed_since"], wal["failures"], wal["recoveries"]) == (
        REASON,
        FAILED_AT,
        1,
        0,
    )
    found = await scrape(client)
    assert found.value("likes_wal_failed") == 1
    assert (found.value("likes_wal_failures_total"), found.value("likes_wal_recoveries_total")) == (1, 0)

    recover(client.app[DURABILITY].wal)
    assert await answer(client, "/readyz") == (200, {"ready": True, "node": "n1"})
    wal = (await answer(client, "/v1/cluster"))[1]["wal"]
    assert (wal["failure"], wal["failed_since"], wal["failures"], wal["recoveries"]) == (None, None, 1, 1)
    found = await scrape(client)
    assert found.value("likes_wal_failed") == 0
    assert (found.value("likes_wal_failures_total"), found.value("likes_wal_recoveries_total")) == (1, 1)


# -- a disk that fails for real ----------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def test_a_full_disk_is_reported_until_the_log_takes_writes_again(
    client: Client, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    fill_log_disk(directory)  # the log's next write fails as on a full disk: ENOSPC
    away = tmp_path / "wal-away"
    directory.rename(away)
    directory.write_bytes(b"")  # and so does every probe: no new segment can be made

    status, body = await answer(client, f"{ITEM}/likes/7", "PUT")
    assert status == 503 and body["error"]["code"] == "not_durable", body
    assert "No space left on device" in body["error"]["message"]
    assert (await answer(client, "/healthz"))[0] == 200
    assert (await answer(client, ITEM))[0] == 200  # reads are still served
    await asyncio.sleep(1.5)  # a probe or more fails meanwhile: still failed
    status, body = await answer(client, "/readyz")
    wal = (await answer(client, "/v1/cluster"))[1]["wal"]
    assert status == 503 and body["error"]["code"] == "not_ready", body
    assert wal["failure"] and body["error"]["message"].endswith(wal["failure"])
    assert (wal["failures"], wal["recoveries"]) == (1, 0)
    assert wal["failed_since"] == pytest.approx(time.time(), abs=30)
    assert (await scrape(client)).value("likes_wal_failed") == 1

    directory.unlink()
    away.rename(directory)

    async def ready() -> bool:
        return (await answer(client, "/readyz"))[0] == 200

    await eventually(ready, "the log takes writes again once the disk does")
    wal = (await answer(client, "/v1/cluster"))[1]["wal"]
    assert (wal["failure"], wal["failed_since"], wal["failures"], wal["recoveries"]) == (None, None, 1, 1)
    assert (await answer(client, f"{ITEM}/likes/7", "PUT"))[0] == 200
    found = await scrape(client)
    assert found.value("likes_wal_failed") == 0
    assert (found.value("likes_wal_failures_total"), found.value("likes_wal_recoveries_total")) == (1, 1)
