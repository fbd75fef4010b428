"""Redis and MySQL as a run's checkpoint sinks: a private prefix and database (``bench.servers``), and
whether they hold the nodes' counts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.scenarios.nodes import COUNT_CHUNK
from bench.servers import Scratch

#: Bound on one read of MySQL, in seconds (a million-row ``like_records`` takes a while to count).
ADMIN_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Sinks(Scratch):
    """A private Redis prefix and MySQL database for one run's checkpoints, and what they hold."""

    def mysql_counts(self, content_type: str, records: bool) -> dict[int, int]:
        """Per item, ``like_item_state.like_count`` or (``records``) the live ``like_records`` rows."""
        sql = (
            "SELECT content_id, COUNT(*) FROM like_records WHERE content_type = %s AND is_canceled = 0 "
            "GROUP BY content_id"
            if records
            else "SELECT content_id, like_count FROM like_item_state WHERE content_type = %s"
        )
        try:
            rows = self.stores.mysql_rows(sql, (content_type,), database=self.database, timeout=ADMIN_TIMEOUT)
        except Exception:  # not created yet, or busy: the poll tries again
            return {}
        return {int(item): int(count) for item, count in rows}

    def redis_counts(self, content_type: str, ids: Sequence[int]) -> tuple[dict[int, int], dict[int, int]]:
        """Per item, ``like:count`` and the length of ``like:status``."""

        async def read(client: Any) -> tuple[dict[int, int], dict[int, int]]:
            counts: dict[int, int] = {}
            statuses: dict[int, int] = {}
            for first in range(0, len(ids), COUNT_CHUNK):
                chunk = ids[first : first + COUNT_CHUNK]
                pipe = client.pipeline(transaction=False)
                for item in chunk:
                    pipe.get(f"{self.prefix}like:count:{content_type}:{item}")
                    pipe.hlen(f"{self.prefix}like:status:{content_type}:{item}")
                replies = await pipe.execute()
                for k, item in enumerate(chunk):
                    counts[item] = int(replies[2 * k] or 0)
                    statuses[item] = int(replies[2 * k + 1] or 0)
            return counts, statuses

        return self.stores.redis(read)

    def until_exact(
        self,
        content_type: str,
        ids: Sequence[int],
        expected: Mapping[int, int],
        started: float,
        timeout: float,
    ) -> dict[str, Any]:
        """Poll Redis and MySQL until each holds the nodes' counts; seconds after ``started`` for each."""
        want = {item: expected.get(item, 0) for item in ids}
        found: dict[str, Any] = {"redis": None, "mysql": None}
        interval = 0.2 if len(ids) <= COUNT_CHUNK else 1.0
        last: dict[str, Any] = {}
        for _ in range(int(timeout / interval) + 2):
            if found["redis"] is None:
                counts, statuses = self.redis_counts(content_type, ids)
                last["redis"] = (counts, statuses)
                if counts == want and statuses == want:
                    found["redis"] = time.monotonic() - started
            if found["mysql"] is None:
                states = self.mysql_counts(content_type, records=False)
                last["mysql_states"] = states
                if all(states.get(item, 0) == n for item, n in want.items()):
                    records = self.mysql_counts(content_type, records=True)
                    last["mysql_records"] = records
                    if all(records.get(item, 0) == n for item, n in want.items()):
                        found["mysql"] = time.monotonic() - started
            if all(v is not None for v in found.values()) or time.monotonic() - started > timeout:
                break
            time.sleep(interval)
        redis_counts, redis_statuses = last.get("redis", ({}, {}))
        return {
            "redis": {
                "exact": found["redis"] is not None,
                "after_s": found["redis"],
                "count_total": sum(redis_counts.values()),
                "status_total": sum(redis_statuses.values()),
                "prefix": self.prefix,
            },
            "mysql": {
                "exact": found["mysql"] is not None,
                "after_s": found["mysql"],
                "item_state_total": sum(last.get("mysql_states", {}).values()),
                "like_records_live": sum(last.get("mysql_records", {}).values())
                if "mysql_records" in last
                else None,
                "database": self.database,
            },
            "expected_total": sum(want.values()),
        }
