"""``likes up``: start every node of the cluster file that lives on this host, and stop them together.

Each node is a child process (``python -m node node ...``) so one crash takes down one node, as in
production. The supervisor waits until every node answers ``/healthz``, prints their URLs, and then
waits for SIGINT or SIGTERM, upon which it sends SIGTERM to every child by pid, waits for each to
flush its gossip and exit, and SIGKILLs any that will not. A node that dies on its own is restarted
(it comes back under a new incarnation and catches up from its peers by anti-entropy), unless it
keeps dying: then the supervisor stops everything and exits 1 rather than hide a crash loop.
Children also watch their parent, so a supervisor killed with ``kill -9`` leaves no node behind.

Start-up waits on liveness (``/healthz``: the process answers), not readiness (``/readyz``: it takes
writes), and only a node whose process died is restarted: a node whose disk refuses writes still
serves reads, says why at ``/readyz``, ``/v1/cluster`` and ``likes status``, and takes writes again
by itself once the disk does, so neither holding up the others nor restarting it would help.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from node.config import ClusterConfig, NodeSpec
from node.durable.wal import DISCARD_FLAG

#: How long every node together may take to answer ``/healthz`` after start, in seconds.
START_TIMEOUT = 30.0
#: How long a node may take to stop after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 10.0
#: Talks to the nodes directly: a proxy from the environment must not sit between us and loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: How often the supervisor looks at its children, in seconds.
POLL_INTERVAL = 0.1
#: A node that died this many times within ``RESTART_WINDOW`` seconds is not restarted again.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


@dataclass
class _Child:
    spec: NodeSpec
    process: subprocess.Popen[bytes]
    #: When the node died on its own recently (monotonic seconds).
    deaths: list[float] = field(default_factory=list)


def is_local(host: str) -> bool:
    """Whether ``host`` names an address of this machine (one we can bind)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((address[0], 0))
            except OSError:
                continue
            return True
    return False


def run_cluster(
    config_path: Path,
    config: ClusterConfig,
    *,
    out: TextIO = sys.stdout,
    log_format: str = "auto",
    log_level: str = "info",
    discard_damaged: bool = False,
) -> int:
    """Start the local nodes, wait for a signal, stop them; the exit status of ``likes up``. The
    nodes log in ``log_format`` from ``log_level`` up to the supervisor's stderr;
    ``discard_damaged`` goes to every node started, restarts included (``likes node
    --discard-damaged``)."""
    options = ["--log-level", log_level]
    if discard_damaged:
        options.append(DISCARD_FLAG)
    local = [spec for spec in config.nodes if is_local(spec.host)]
    if not local:
        print("likes up: no node of the cluster file lives on this host", file=sys.stderr)
        return 2
    config.security.resolve()  # fail here, once, rather than in every child
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, frame: FrameType | None) -> None:
        received.append(number)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[_Child] = []
    try:
        for spec in local:
            children.append(_Child(spec, _spawn(config_path, spec, log_format, options)))
        if not _wait_until_healthy(children, stop, out):
            return 0 if received else 1
        for child in children:
            print(f"{child.spec.name}  {child.spec.url}  (pid {child.process.pid})", file=out, flush=True)
        print(f"likes: {len(children)} node(s) up; Ctrl-C stops them", file=out, flush=True)
        while not stop.wait(POLL_INTERVAL):
            for child in children:
                if child.process.poll() is not None and not _restart(
                    config_path, child, out, log_format, options
                ):
                    return 1
        print("likes: stopping", file=out, flush=True)
        return 0
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _restart(
    config_path: Path, child: _Child, out: TextIO, log_format: str, options: Sequence[str] = ()
) -> bool:
    """Start a node that died again; False if it has been dying too often."""
    now = time.monotonic()
    child.deaths = [t for t in child.deaths if now - t < RESTART_WINDOW] + [now]
    status = child.process.returncode
    if len(child.deaths) > MAX_RESTARTS:
        print(
            f"likes: node {child.spec.name} exited with status {status}, the {len(child.deaths)}th time "
            f"within {RESTART_WINDOW:.0f} s; stopping the cluster",
            file=sys.stderr,
        )
        return False
    child.process = _spawn(config_path, child.spec, log_format, options)
    print(
        f"likes: node {child.spec.name} exited with status {status}; restarted (pid {child.process.pid})",
        file=out,
        flush=True,
    )
    return True


def _spawn(
    config_path: Path, spec: NodeSpec, log_format: str, options: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start one node, with ``likes node`` ``options``, as a child that stops when we do (``auto``
    resolves alike in it: it shares our stderr)."""
    command: Sequence[str] = (
        sys.executable, "-m", "node", "node",
        "--config", str(config_path), "--name", spec.name, "--exit-with-parent",
        "--log-format", log_format, *options,
    )  # fmt: skip
    # A session of its own: Ctrl-C reaches the supervisor only, which stops the children in order.
    return subprocess.Popen(command, start_new_session=True)


def _wait_until_healthy(children: list[_Child], stop: threading.Event, out: TextIO) -> bool:
    """Poll each node's ``/healthz`` until all answer; False on timeout, signal or a dead child."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(children)
    while pending:
        for child in list(pending):
            if child.process.poll() is not None:
                print(
                    f"likes: node {child.spec.name} failed to start (status {child.process.returncode})",
                    file=sys.stderr,
                )
                return False
            if _healthy(child.spec):
                pending.remove(child)
        if not pending:
            return True
        if time.monotonic() > deadline:
            names = ", ".join(child.spec.name for child in pending)
            print(f"likes: node(s) {names} did not answer within {START_TIMEOUT:.0f} s", file=sys.stderr)
            return False
        if stop.wait(POLL_INTERVAL):
            return False
    return True


def _healthy(spec: NodeSpec) -> bool:
    try:
        with _DIRECT.open(f"{spec.url}/healthz", timeout=1.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _stop_all(children: list[_Child]) -> None:
    """SIGTERM every child by pid, wait for them, SIGKILL those past the deadline."""
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"likes: node {child.spec.name} did not stop in time; killing it", file=sys.stderr)
            child.process.kill()
            child.process.wait()
