"""``LocalCluster``: a real cluster of ``likes up`` on loopback, for measurements that need processes.

Benchmarks must describe what we ship, so the cluster file is the repository's ``cluster.yaml`` with
only the nodes (free loopback ports), the data directory and the secret replaced: gossip timings, API
limits, storage and checkpoint settings are the shipped ones. A measurement that needs other gossip
timings passes overrides, and its result records them; one that measures the Redis and MySQL sinks
passes checkpoint keys (its private ``redis_prefix`` and database), the rest staying shipped. Each
cluster gets its own directory (config, data, log); its secret travels through an environment
variable, never a file, and other ``LIKES_*`` variables of the caller's shell are not passed on, so
they cannot change what is measured.

Start-up is over only when every node answers ``/healthz`` *and* sees every member alive: a
measurement started earlier would time the failure detector, not replication. Every wait is bounded;
a cluster that fails to start raises ``ClusterError`` with the tail of its log.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from node.config import ApiSettings, GossipSettings, load_config
from node.errors import ConfigError

#: The configuration the project ships (``make up``); its gossip and API settings are the defaults.
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "cluster.yaml"
#: How long every node together may take to answer and see all members alive, in seconds.
START_TIMEOUT = 45.0
#: How long ``likes up`` may take to stop its nodes after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
#: Talks to the nodes directly: a proxy from the environment must not sit between us and loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ClusterError(RuntimeError):
    """The cluster did not start (or stopped) as it should; the message carries its log's tail."""


def shipped_settings() -> tuple[GossipSettings, ApiSettings]:
    """Gossip and API settings of the shipped ``cluster.yaml`` (the built-in defaults if it is absent)."""
    try:
        config = load_config(SHIPPED_CONFIG)
    except ConfigError:
        return GossipSettings(), ApiSettings()
    return config.gossip, config.api


def shipped_file() -> dict[str, Any]:
    """The shipped ``cluster.yaml`` as parsed YAML (empty if absent), to copy every section from."""
    try:
        raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports nothing listens on right now (held open together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def likes_command() -> list[str]:
    """The ``likes`` console script next to this interpreter, or the same entry point via ``-m node``."""
    script = Path(sys.executable).with_name("likes")
    return [str(script)] if script.exists() else [sys.executable, "-m", "node"]


def get_json(url: str, timeout: float = 2.0) -> Any:
    """``GET url`` as JSON, synchronously (start-up checks and one-off reads)."""
    with _DIRECT.open(url, timeout=timeout) as response:
        return json.loads(response.read())


class LocalCluster:
    """``n_nodes`` nodes started by one ``likes up`` on 127.0.0.1; a context manager.

    ``gossip`` overrides ``cluster.yaml`` gossip keys (``{"delta_interval_ms": 20}``); an unknown key
    raises ``ValueError``. With ``root_dir`` None the cluster's files live in a temporary directory
    removed on exit; otherwise in a fresh subdirectory of ``root_dir`` that is kept (its log helps).
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        n_nodes: int,
        root_dir: Path | None = None,
        *,
        secret_env: str = "LIKES_BENCH_SECRET",
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        gossip: Mapping[str, int] | None = None,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        if n_nodes < 1:
            raise ValueError("a cluster needs at least one node")
        shipped_gossip, self.api = shipped_settings()
        known = {f.name for f in dataclasses.fields(GossipSettings)}
        gossip = dict(gossip or {})
        unknown = set(gossip) - known
        if unknown:
            raise ValueError(f"unknown gossip setting(s): {', '.join(sorted(unknown))}")
        self.n_nodes = n_nodes
        self.gossip: dict[str, int] = {**dataclasses.asdict(shipped_gossip), **gossip}
        #: Checkpoint keys set over the shipped ones (sinks: ``redis_url``, ``redis_prefix``, ``mysql_url``).
        self.checkpoint: dict[str, Any] = dict(checkpoint or {})
        self.names = [f"n{i + 1}" for i in range(n_nodes)]
        self.urls: list[str] = []
        self._root_dir = root_dir
        self._secret_env = secret_env
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self.directory: Path | None = None
        self.config_path: Path | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the cluster file, run ``likes up``, and wait until everyone sees everyone alive."""
        if self.process is not None:
            raise ClusterError("cluster already started")
        if self._root_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="likes-bench-")
            self.directory = Path(self._temp.name)
        else:
            self._root_dir.mkdir(parents=True, exist_ok=True)
            self.directory = Path(tempfile.mkdtemp(prefix=f"cluster{self.n_nodes}-", dir=self._root_dir))
        ports = free_ports(2 * self.n_nodes, self.HOST)
        self.urls = [f"http://{self.HOST}:{ports[i]}" for i in range(self.n_nodes)]
        self.config_path = self.directory / "cluster.yaml"
        self.config_path.write_text(self._cluster_yaml(ports))
        self.log_path = self.directory / "up.log"
        env = {key: value for key, value in os.environ.items() if not key.startswith("LIKES_")}
        env[self._secret_env] = secrets.token_urlsafe(32)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*likes_command(), "up", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int | None:
        """SIGTERM ``likes up`` (it stops its nodes), SIGKILL after ``stop_timeout``; its exit status."""
        status: int | None = None
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self._stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()  # its nodes exit on their own once their parent is gone
                    process.wait(timeout=self._stop_timeout)
            status = process.returncode
        if self._temp is not None:
            # Nodes outlive a killed supervisor by up to a second; tolerate their last writes.
            shutil.rmtree(self._temp.name, ignore_errors=True)
            self._temp = None
        return status

    # -- what measurements use --------------------------------------------------------------------

    def cluster_views(self) -> list[dict[str, Any]]:
        """Every node's ``GET /v1/cluster``, in node order."""
        return [get_json(f"{url}/v1/cluster") for url in self.urls]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the ``likes up`` log (nodes' output included)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals --------------------------------------------------------------------------------

    def _cluster_yaml(self, ports: list[int]) -> str:
        """The shipped file with our nodes, data directory, secret variable and gossip timings."""
        assert self.directory is not None
        raw = copy.deepcopy(shipped_file())
        raw["nodes"] = [
            {"name": name, "host": self.HOST, "http_port": ports[i], "gossip_port": ports[self.n_nodes + i]}
            for i, name in enumerate(self.names)
        ]
        storage = raw.get("storage")
        if not isinstance(storage, dict):
            storage = {}
        raw["storage"] = {**storage, "data_dir": str(self.directory / "data")}
        raw["gossip"] = dict(self.gossip)
        if self.checkpoint:
            shipped_checkpoint = raw.get("checkpoint")
            if not isinstance(shipped_checkpoint, dict):
                shipped_checkpoint = {}
            raw["checkpoint"] = {**shipped_checkpoint, **self.checkpoint}
        raw["security"] = {"secret_env": self._secret_env}
        return "# Written by bench.launch from the shipped cluster.yaml.\n" + yaml.safe_dump(
            raw, sort_keys=False
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ClusterError(
                    f"likes up exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster was not up with all members alive within {self._start_timeout:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def _ready(self) -> bool:
        """Every node answers and lists all ``n_nodes`` members as alive."""
        try:
            for url in self.urls:
                if get_json(f"{url}/healthz", timeout=1.0).get("status") != "ok":
                    return False
            for view in self.cluster_views():
                states = [member["state"] for member in view["members"]]
                if states != ["alive"] * self.n_nodes:
                    return False
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            return False
        return True
