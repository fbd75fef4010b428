"""Nodes as separate ``likes node`` processes the test starts, kills, pauses and restarts one by one.

``likes up`` restarts a dead node at once; tests of crash recovery need the gap between the crash and
the restart (to cut a log there), so they drive each node themselves. The processes are
``bench.launch.NodeProcesses``'s (the launcher the bench uses too); what is the tests' own is here:
their cluster file (fast gossip, a fixed secret, the built-in defaults otherwise) and requests that
check their answers. Every wait is bounded.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bench import launch

DIRECT = launch.DIRECT
TIMEOUT = 20.0
SECRET_ENV = {"LIKES_TEST_SECRET": "a-test-secret-of-some-length"}
#: Gossip timings that let a test cluster converge, and see a node dead, within about a second.
TEST_GOSSIP = {
    "delta_interval_ms": 20,
    "anti_entropy_interval_ms": 200,
    "probe_interval_ms": 200,
    "probe_timeout_ms": 80,
    "suspicion_timeout_ms": 1000,
    "membership_sync_interval_ms": 500,
}
#: How a test cluster's file and environment are made: every ``launch`` cluster of the tests takes these.
TEST_CLUSTER: dict[str, Any] = {
    "shipped": False,
    "gossip": TEST_GOSSIP,
    "secret_env": "LIKES_TEST_SECRET",
    "secret": SECRET_ENV["LIKES_TEST_SECRET"],
    "env": os.environ,
}


class NodeProcesses(launch.NodeProcesses):
    """A test cluster file (``extra``: more YAML sections, e.g. ``checkpoint: {...}``) and one process
    per node, started and stopped by the test."""

    def __init__(self, root: Path, names: tuple[str, ...], *, extra: str = "") -> None:
        super().__init__(
            root, names, sections=yaml.safe_load(extra) or {}, start_timeout=TIMEOUT, **TEST_CLUSTER
        )

    def request(self, node: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; (status, JSON body). Connection failures raise OSError."""
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.urls[node] + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with DIRECT.open(request, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def call(self, node: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, answer = self.request(node, method, path, body)
        assert code == status, (node, method, path, code, answer)
        return answer

    def reachable(self, node: str) -> bool:
        try:
            return self.request(node, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def likers(self, node: str, item: str) -> set[int]:
        """Every liker of ``item`` (``type/id``) on ``node``, through the paginated list."""
        users: set[int] = set()
        after = ""
        for _ in range(10_000):
            page = self.call(node, "GET", f"/v1/items/{item}/likes?limit=1000{after}")
            users.update(page["likers"])
            if page["next"] is None:
                return users
            after = f"&after={page['next']}"
        raise AssertionError("pagination did not end")

    def eventually(self, check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        pytest.fail(f"not within {timeout} s: {what}")
