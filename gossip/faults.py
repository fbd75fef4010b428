"""Fault injection for tests: partitions and detours of gossip between processes, driven by a control file.

A fault harness must cut gossip between chosen members (halves, one node isolated, a bridge) without
root, and route a member's gossip through a proxy that mangles frames. ``FaultPlan.route`` decides
both, per frame, as the TCP transport's ``route`` (``gossip.tcp.Route``), just before it queues the
frame.

Nothing in production builds a plan: no ``cluster.yaml`` key and no environment variable can turn it
on. A test starts its nodes through ``bench.testnode --faults FILE``, which hands ``run_node`` the
plan's ``route``. The file is JSON, rewritten atomically by the harness and re-read at most every
``RELOAD_INTERVAL`` seconds (one ``stat`` call)::

    {"blocked": [["127.0.0.1:9001", "127.0.0.1:9002"], ...],   # unordered pairs that cannot talk
     "via": {"127.0.0.1:9002": "127.0.0.1:19002"}}              # frames for a member go to a proxy

A missing file means no faults; an unreadable one keeps the last good plan (and says so), so a
half-written file can never heal a partition by accident.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from gossip.transport import Address

log = logging.getLogger(__name__)

#: How often the control file is checked for changes, in seconds.
RELOAD_INTERVAL = 0.05


def address_text(address: Address) -> str:
    """``host:port``: how addresses are written in the control file."""
    return f"{address[0]}:{address[1]}"


def _parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {text!r}")
    return host, int(port)


class FaultPlan:
    """Which peers this member may reach right now, and through which address."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._blocked: set[frozenset[str]] = set()
        self._via: dict[str, Address] = {}
        self._checked = float("-inf")
        self._seen: tuple[int, int, int] | None = None

    def route(self, source: Address, destination: Address) -> Address | None:
        """Where a frame from ``source`` for ``destination`` goes: an address, or None when cut."""
        self._refresh()
        target = address_text(destination)
        if frozenset((address_text(source), target)) in self._blocked:
            return None
        return self._via.get(target, destination)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return
        if self._checked == float("-inf"):  # at the first frame: the node's logging is set up by then
            log.warning("TEST FAULT INJECTION ENABLED: gossip obeys %s", self.path)
        self._checked = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._blocked, self._via, self._seen = set(), {}, None
            return
        except OSError as exc:
            log.warning("fault plan %s unreadable, keeping the last one: %s", self.path, exc)
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        try:
            raw = json.loads(self.path.read_bytes())
            blocked = {frozenset(str(a) for a in pair) for pair in raw.get("blocked", [])}
            via = {str(k): _parse_address(str(v)) for k, v in raw.get("via", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("fault plan %s unreadable, keeping the last one: %s", self.path, exc)
            return
        self._blocked, self._via, self._seen = blocked, via, seen
        log.info("fault plan: %d blocked pairs, %d detours", len(blocked), len(via))
