"""The one launcher of real clusters on loopback, for the bench and the tests: a cluster file on free
ports, and its nodes as processes started, stopped, killed, paused and restarted by pid.

Two ways to run the nodes of one cluster file:

- ``NodeProcesses``: one ``likes node`` process per node, each driven by the caller. ``likes up``
  restarts a dead node at once; crash-recovery tests need the gap between a crash and the restart (to
  cut a log there), and the fault harness kills, pauses and restarts nodes on its own schedule.
- ``LocalCluster``: one ``likes up`` that starts and supervises every node, as ``make up`` does; a
  context manager, for measurements.

The cluster file is either the repository's ``cluster.yaml`` (``shipped=True``: benchmarks must
describe what we ship, so only the nodes, the data directory and the secret are replaced) or the
built-in defaults (``shipped=False``: a test's own file). Over that base go the caller's ``gossip``
keys and any other ``sections`` (``checkpoint``, say), key by key; the cluster's ``gossip`` records
the section written, as the file gives it. A file the nodes would refuse (an unknown key, a value out
of range) raises ``ValueError`` before any process starts. The secret travels through an environment
variable, never a file. The nodes' environment is the caller's ``env``; without one, this process's
minus its ``LIKES_*`` variables, so the caller's shell cannot change what is measured.

A cluster is started once every node answers ``/healthz`` and sees every member alive: a measurement
or test begun earlier would time the failure detector, not replication. Every wait is bounded; one
that runs out, or a node that exits meanwhile, raises ``ClusterError`` with the tail of the log.
"""

from __future__ import annotations

import copy
import dataclasses
import http.client
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
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from node.config import ApiSettings, ClusterConfig, load_config, parse_config
from node.errors import ConfigError

#: The configuration the project ships (``make up``); its gossip and API settings are the defaults.
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "cluster.yaml"
HOST = "127.0.0.1"
#: The variable that carries a bench cluster's secret.
BENCH_SECRET_ENV = "LIKES_BENCH_SECRET"
#: How long every node together may take to answer and see all members alive, in seconds.
START_TIMEOUT = 45.0
#: How long a node (or ``likes up``, which stops its nodes first) may take to stop after SIGTERM
#: before it is killed, in seconds.
STOP_TIMEOUT = 20.0
NODE_STOP_TIMEOUT = 15.0
#: How long a killed process may take to be reaped, in seconds.
REAP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
#: Talks to the nodes directly: a proxy from the environment must not sit between us and loopback.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ClusterError(RuntimeError):
    """The cluster did not start (or stopped) as it should; the message carries its log's tail."""


# -- the shipped file, ports, commands ---------------------------------------------------------------


def shipped_file() -> dict[str, Any]:
    """The shipped ``cluster.yaml`` as parsed YAML (empty if absent), to copy every section from."""
    try:
        raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def shipped_config() -> ClusterConfig:
    """The shipped ``cluster.yaml`` as the nodes read it (the built-in defaults if it is absent)."""
    try:
        return load_config(SHIPPED_CONFIG)
    except ConfigError:
        defaults = Settings(shipped=False)
        return defaults.parse(defaults.document(PLACEHOLDER, Path("data")))


def shipped_gossip() -> dict[str, int]:
    """The shipped file's gossip section as the file writes it (milliseconds for a timing)."""
    return Settings().timings()[0]


def parse_overrides(pairs: Sequence[str]) -> dict[str, int]:
    """``["delta_interval_ms=20"]`` as gossip overrides for a launched cluster; ValueError if malformed
    or if the shipped file with them would be refused (an unknown key, a value out of range)."""
    overrides: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value.isdigit():
            raise ValueError(f"expected KEY=INTEGER, got {pair!r}")
        overrides[key.strip()] = int(value)
    Settings(gossip=overrides)
    return overrides


def free_ports(count: int, host: str = HOST) -> list[int]:
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
    with DIRECT.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def serves(url: str) -> bool:
    """Whether the node at ``url`` answers ``/healthz`` as alive within a second."""
    try:
        return bool(get_json(f"{url}/healthz", timeout=1.0).get("status") == "ok")
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return False


def all_alive(urls: Iterable[str], members: int) -> bool:
    """Whether every node at ``urls`` lists ``members`` members, all of them alive."""
    try:
        return all(
            [member["state"] for member in get_json(f"{url}/v1/cluster")["members"]] == ["alive"] * members
            for url in urls
        )
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return False


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log (empty if there is none yet)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM ``process``, SIGKILL it after ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.terminate()
    return reap(process, timeout)


def reap(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait ``timeout`` seconds for ``process`` to exit, then SIGKILL it; its exit status."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=REAP_TIMEOUT)
    return process.returncode


# -- the cluster file and the nodes' environment --------------------------------------------------------


#: A node for checking a file before its ports are chosen: (name, http port, gossip port).
PLACEHOLDER = (("n1", 1, 2),)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a launched cluster's file and environment hold besides its nodes (see the module). A file
    ``node.config`` would refuse (an unknown key, a value out of range) raises ``ValueError`` here,
    before any process starts: the nodes' own parser decides, so the bench never lags behind it."""

    shipped: bool = True
    gossip: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sections: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    secret_env: str = BENCH_SECRET_ENV
    #: None: a fresh random secret per cluster.
    secret: str | None = None
    #: None: this process's environment without its ``LIKES_*`` variables.
    env: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        self.parse(self.document(PLACEHOLDER, Path("data")))

    def document(self, nodes: Iterable[tuple[str, int, int]], data_dir: Path) -> dict[str, Any]:
        """The cluster file for ``nodes`` (name, http port, gossip port): the base file with our nodes,
        data directory and secret variable, the given keys set over its sections (``security``: any
        keys but the secret, such as ``api_tokens``)."""
        raw = copy.deepcopy(shipped_file()) if self.shipped else {}
        raw["nodes"] = [
            {"name": name, "host": HOST, "http_port": http, "gossip_port": gossip}
            for name, http, gossip in nodes
        ]
        given = {name: dict(keys) for name, keys in self.sections.items()}
        security = given.pop("security", {})
        if self.gossip:
            given["gossip"] = {**given.get("gossip", {}), **self.gossip}
        given["storage"] = {**given.get("storage", {}), "data_dir": str(data_dir)}
        for name in sorted(given, key=lambda name: name != "storage"):
            base = raw.get(name)
            raw[name] = {**(base if isinstance(base, dict) else {}), **given[name]}
        # The shipped secret gives way: a file names exactly one, and ours travels in the environment.
        raw["security"] = {**security, "secret_env": self.secret_env}
        return raw

    @staticmethod
    def parse(document: Mapping[str, Any]) -> ClusterConfig:
        """``document`` as the nodes will read it; ValueError saying why they would refuse it."""
        try:
            return parse_config(dict(document), base_dir=Path.cwd())
        except ConfigError as exc:
            raise ValueError(f"a cluster file the nodes would refuse: {exc}") from exc

    def timings(self) -> tuple[dict[str, int], ApiSettings]:
        """The gossip section the file gives (the base file's keys with the overrides, as the file
        writes them; a key it leaves out takes its built-in default), and the API settings."""
        document = self.document(PLACEHOLDER, Path("data"))
        section = document.get("gossip")
        return dict(section) if isinstance(section, dict) else {}, self.parse(document).api

    def environment(self) -> dict[str, str]:
        """The nodes' environment, the secret included."""
        if self.env is None:
            env = {key: value for key, value in os.environ.items() if not key.startswith("LIKES_")}
        else:
            env = dict(self.env)
        env[self.secret_env] = self.secret if self.secret is not None else secrets.token_urlsafe(32)
        return env


@dataclasses.dataclass(frozen=True)
class ClusterFile:
    """A cluster file written for ``names`` on free loopback ports; the nodes keep data in ``data_dir``."""

    path: Path
    names: tuple[str, ...]
    http_ports: dict[str, int]
    gossip_ports: dict[str, int]
    data_dir: Path

    @classmethod
    def write(cls, directory: Path, names: Sequence[str], settings: Settings) -> ClusterFile:
        ports = free_ports(2 * len(names))
        written = cls(
            path=directory / "cluster.yaml",
            names=tuple(names),
            http_ports={name: ports[i] for i, name in enumerate(names)},
            gossip_ports={name: ports[len(names) + i] for i, name in enumerate(names)},
            data_dir=directory / "data",
        )
        nodes = [(name, written.http_ports[name], written.gossip_ports[name]) for name in names]
        document = settings.document(nodes, written.data_dir)
        origin = " from the shipped cluster.yaml" if settings.shipped else ""
        # Flow style for each section's keys, one line each, as a hand-written test file has them.
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=2**16)
        written.path.write_text(f"# Written by bench.launch{origin}.\n{text}")
        return written

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.http_ports[name]}"

    def gossip_address(self, name: str) -> str:
        return f"{HOST}:{self.gossip_ports[name]}"


# -- one process per node ----------------------------------------------------------------------------


class NodeProcesses:
    """A cluster file in ``root`` and one ``likes node`` process per node, started, stopped, killed,
    paused and restarted one by one. ``root`` holds the file, the data (``data/<name>``) and each
    node's output (``<name>.log``, appended to across restarts)."""

    def __init__(
        self,
        root: Path,
        names: Sequence[str],
        *,
        shipped: bool = True,
        gossip: Mapping[str, int] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        secret_env: str = BENCH_SECRET_ENV,
        secret: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = NODE_STOP_TIMEOUT,
    ) -> None:
        if not names:
            raise ValueError("a cluster needs at least one node")
        settings = Settings(shipped, dict(gossip or {}), dict(sections or {}), secret_env, secret, env)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.names = tuple(names)
        self.file = ClusterFile.write(root, self.names, settings)
        self.config = self.file.path
        self.urls = {name: self.file.url(name) for name in self.names}
        #: What starts a node, ``likes node`` options to follow (``bench.testnode.command`` for hooks).
        self.command = [*likes_command(), "node"]
        #: The environment every node starts with (a test may add to it before starting them).
        self.env = settings.environment()
        #: Variables for one node only, over ``env`` (an LD_PRELOAD shim that fails its fsyncs, say).
        self.node_env: dict[str, dict[str, str]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout

    def data_dir(self, name: str) -> Path:
        return self.file.data_dir / name

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def log_tail(self, name: str, lines: int = 20) -> str:
        return tail(self.log(name), lines)

    def spawn(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        """Start ``name`` (with options for it alone, if any) without waiting for it."""
        with open(self.log(name), "ab") as output:
            process = subprocess.Popen(
                [*self.command, "--config", str(self.config), "--name", name, *options],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **self.node_env.get(name, {})},
            )
        self.processes[name] = process
        self.paused.discard(name)
        return process

    def start(self, name: str, *options: str) -> None:
        """Start ``name`` (with options for it alone, if any) and wait until it serves."""
        self.spawn(name, *options)
        self.wait(lambda: serves(self.urls[name]), f"{name} serves", [name])

    def start_all(self) -> None:
        """Start every node at once; return when each serves and sees every member alive."""
        for name in self.names:
            self.spawn(name)
        self.wait(lambda: all(serves(url) for url in self.urls.values()), "every node serves", self.names)
        self.wait(
            lambda: all_alive(self.urls.values(), len(self.names)),
            "every node sees every member alive",
            self.names,
        )

    def wait(self, check: Callable[[], bool], what: str, watched: Iterable[str] = ()) -> None:
        """Poll ``check`` until it holds, for at most ``start_timeout`` seconds; ClusterError if it
        does not, or if a ``watched`` node exits meanwhile."""
        deadline = time.monotonic() + self.start_timeout
        while not check():
            for name in watched:
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}"
                    )
            if time.monotonic() > deadline:
                logs = "\n".join(f"{name}:\n{self.log_tail(name)}" for name in watched)
                raise ClusterError(f"not within {self.start_timeout:.0f} s: {what}\n{logs}")
            time.sleep(POLL_INTERVAL)

    def kill(self, name: str) -> None:
        """``kill -9`` the node and reap it."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=REAP_TIMEOUT)
        self.paused.discard(name)

    def stop(self, name: str) -> int:
        """SIGTERM one node, a clean stop (it writes its final snapshot); SIGKILL after a bounded wait."""
        status = terminate(self.processes.pop(name), self.stop_timeout)
        self.paused.discard(name)
        return status

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its sockets and answers nothing until ``resume``."""
        self.processes[name].send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def stop_all(self) -> None:
        """SIGTERM every node (SIGCONT first, in case it is paused); SIGKILL after a bounded wait."""
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            reap(process, self.stop_timeout)
        self.processes.clear()
        self.paused.clear()


# -- one likes up for the whole cluster -------------------------------------------------------------------


class LocalCluster:
    """``n_nodes`` nodes started by one ``likes up`` on 127.0.0.1; a context manager.

    With ``root_dir`` None the cluster's files live in a temporary directory removed on stop;
    otherwise in a fresh subdirectory of ``root_dir`` that is kept (its log helps). The keyword
    arguments are ``NodeProcesses``'s (see the module), each cluster's file written when it starts.
    """

    def __init__(
        self,
        n_nodes: int,
        root_dir: Path | None = None,
        *,
        shipped: bool = True,
        gossip: Mapping[str, int] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        secret_env: str = BENCH_SECRET_ENV,
        secret: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if n_nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.settings = Settings(shipped, dict(gossip or {}), dict(sections or {}), secret_env, secret, env)
        self.n_nodes = n_nodes
        #: Every gossip timing in force, and the API settings (what results record).
        self.gossip, self.api = self.settings.timings()
        self.names = [f"n{i + 1}" for i in range(n_nodes)]
        self.urls: list[str] = []
        self._root_dir = root_dir
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self.directory: Path | None = None
        self.config: Path | None = None
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
        written = ClusterFile.write(self.directory, self.names, self.settings)
        self.urls = [written.url(name) for name in self.names]
        self.config = written.path
        self.log_path = self.directory / "up.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*likes_command(), "up", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.settings.environment(),
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
            # A killed supervisor's nodes exit on their own once their parent is gone.
            status = terminate(process, self._stop_timeout)
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
        return "" if self.log_path is None else tail(self.log_path, lines)

    # -- internals --------------------------------------------------------------------------------

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ClusterError(
                    f"likes up exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            if all(serves(url) for url in self.urls) and all_alive(self.urls, self.n_nodes):
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster was not up with all members alive within {self._start_timeout:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)
