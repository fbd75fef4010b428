"""Nodes as separate ``likes node`` processes the test starts, kills, pauses and restarts one by one.

``likes up`` restarts a dead node at once; tests of crash recovery need the gap between the crash and
the restart (to cut a log there), so they drive each node themselves. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.node.conftest import free_ports
from tests.node.test_cluster import likes_command

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 20.0
SECRET_ENV = {"LIKES_TEST_SECRET": "a-test-secret-of-some-length"}


class NodeProcesses:
    """A cluster file and one process per node, started and stopped by the test."""

    def __init__(self, root: Path, names: tuple[str, ...], *, extra: str = "") -> None:
        self.root = root
        self.names = names
        ports = free_ports(2 * len(names))
        self.urls = {name: f"http://127.0.0.1:{ports[i]}" for i, name in enumerate(names)}
        nodes = "\n".join(
            f"  - {{name: {name}, host: 127.0.0.1, http_port: {ports[i]}, "
            f"gossip_port: {ports[i + len(names)]}}}"
            for i, name in enumerate(names)
        )
        self.config = root / "cluster.yaml"
        self.config.write_text(
            f"nodes:\n{nodes}\n"
            f"storage: {{data_dir: {root / 'data'}}}\n"
            "gossip: {delta_interval_ms: 20, anti_entropy_interval_ms: 200, probe_interval_ms: 200,\n"
            "         probe_timeout_ms: 80, suspicion_timeout_ms: 1000, membership_sync_interval_ms: 500}\n"
            "security: {secret_env: LIKES_TEST_SECRET}\n" + extra
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **SECRET_ENV}
        #: Variables for one node only, over ``env`` (an LD_PRELOAD shim that fails its fsyncs, say).
        self.node_env: dict[str, dict[str, str]] = {}

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self, name: str, *options: str) -> None:
        """Start ``name`` (with ``likes node`` options, if any) and wait until it serves."""
        with open(self.log(name), "ab") as output:
            self.processes[name] = subprocess.Popen(
                [*likes_command(), "node", "--config", str(self.config), "--name", name, *options],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**self.env, **self.node_env.get(name, {})},
            )
        self.eventually(lambda: self.reachable(name), f"{name} serves")

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)
        self.eventually(
            lambda: all(
                [m["state"] for m in self.call(n, "GET", "/v1/cluster")["members"]]
                == ["alive"] * len(self.names)
                for n in self.names
            ),
            "every node sees every member alive",
        )

    def kill(self, name: str) -> None:
        """``kill -9`` the node and reap it."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=10)

    def stop(self, name: str) -> None:
        """SIGTERM one node, a clean stop (it writes its final snapshot); SIGKILL after a bounded wait."""
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def pause(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        """SIGTERM every node (SIGCONT first, in case it is paused); SIGKILL after a bounded wait."""
        for process in self.processes.values():
            process.send_signal(signal.SIGCONT)
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

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
