"""``python -m bench faults``: a Jepsen-style fault harness proving no loss and no duplication.

A real cluster of ``likes node`` processes on loopback takes likes and unlikes from many concurrent
clients while a *nemesis* breaks it; then the faults are healed and a *checker* compares what every
node holds with what the clients were told. The same code runs the bounded CI version
(``tests/faults/``) and the long run here, so the figures and the test prove the same thing.

**Workload.** Each client owns distinct (item, user) pairs, so every pair's history is one client's
sequence of operations and its expected final state is well defined:

- *like-only* pairs get likes on random nodes (retries of one like through any node: the no
  duplication case);
- *toggle* pairs get likes and unlikes, always through the pair's *home* node (chosen at random
  per pair). An unlike removes only the likes its node has observed (observed-remove semantics), so
  sending a pair's unlike to a node that has not yet seen its like would legitimately leave the like
  in place; ordering one user's writes across nodes is what session tokens are for, not this test.

Every operation is recorded as ``ok`` (200), ``fail`` (nothing sent: connection refused; or a 4xx,
which changes nothing), ``refused`` (503 ``not_durable``: the node could not make it durable and says
it changed nothing) or ``info`` (indeterminate: a timeout, a reset after sending, any other 5xx). A
toggle pair is retired after an indeterminate operation, since it might still land after a later one.

**Checker.** A pair may end liked if its last ``ok`` operation is a like or any indeterminate
operation is, and unliked if its last ``ok`` is an unlike, it has none, or any indeterminate operation
is an unlike; failed and refused operations never happened. *Lost*: an acknowledged state not held
after heal (an acknowledged like missing, or an acknowledged unlike undone by nothing the client
attempted). *Phantom*: a liker the history cannot explain (never attempted, or present though only
unlikes could have been last), including a refused write whose effect shows (``refused_visible``: a
refused like held, or a refused unlike's like gone, with no later acknowledged operation to explain
it). Also: every node's
count equals the size of its liker list, no liker listed twice, every node holds the same sets and
the same ``/v1/cluster`` fingerprint, and how long after the heal that took.

**Nemeses.** ``partition`` (halves, one node isolated, a bridge; a new one every 2 s, through the
test-only fault layer ``gossip.faults``), ``kill`` (``kill -9`` of a random node, restarted once the
others have declared it dead), ``pause`` (SIGSTOP for 5 s, SIGCONT), ``proxy`` (every node's gossip
through a ``FrameProxy`` that drops 10%, duplicates 25%, reorders 25% and replays 5% of frames) and
``sinks`` (Redis and MySQL behind cut proxies) and ``disk`` (one node's data dir on a 2 MiB tmpfs
that is filled and freed, and with ``disk_fsync_failures`` every other cycle its fsyncs failing with
EIO through an LD_PRELOAD shim; ``bench.disk``; root, and gcc for the shim). After each disk fault the
nemesis times how long the node takes to take writes again (its first acknowledged write, and
``/readyz`` 200), then kills and restarts it, so what its log replays is checked too. The failure
detector is watched throughout: dead verdicts about a paused node (false) against the detection time
of a real kill.

The cluster file is the shipped ``cluster.yaml`` with only nodes, data directory, secret and (for
``sinks``) the checkpoint URLs replaced, so the figures describe the shipped timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import secrets
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import yaml

from bench.disk import (
    DEFAULT_DISK_BYTES,
    DiskFaultUnavailable,
    Filler,
    Tmpfs,
    build_fail_fsync,
    fail_fsync_env,
)
from bench.launch import free_ports, likes_command, shipped_file
from bench.tcpproxy import FrameProxy, Mangling, TcpProxy

Kind = Literal["like", "unlike"]
Outcome = Literal["ok", "fail", "info", "refused"]
NEMESES = ("partition", "kill", "pause", "proxy", "sinks", "disk")
#: The node whose disk the ``disk`` nemesis breaks.
DISK_VICTIM = "n1"
#: Goal of the issue: every node equal within this many seconds of the heal.
CONVERGE_GOAL = 2.0
CONTENT_TYPE = "post"
FAULTS_ENV = "LIKES_TEST_FAULTS"  # gossip.faults.ENV, spelled out: bench imports no gossip internals
SECRET_ENV = "LIKES_FAULTS_SECRET"
DEFAULT_REDIS_URL = os.environ.get("LIKES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_MYSQL_URL = os.environ.get("LIKES_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")


#: The issue's bad network: 25% duplicated, 25% reordered, 10% dropped, and some old frames replayed.
ISSUE_MANGLING = Mangling(drop=0.10, duplicate=0.25, reorder=0.25, replay=0.05, max_delay=0.03)


class SinkServersUnavailable(RuntimeError):
    """Redis or MySQL cannot be reached, so the ``sinks`` nemesis cannot run."""


@dataclass(frozen=True)
class Settings:
    """One run's figures; the defaults are the issue's long run."""

    nodes: int = 5
    #: How long the nemesis runs (faults on), in seconds.
    seconds: float = 60.0
    clients: int = 10
    items: int = 16
    #: Toggle and like-only pairs each client keeps in play at once.
    toggle_pairs: int = 24
    like_pairs: int = 8
    #: Share of operations on like-only pairs.
    like_only_share: float = 0.35
    #: A client's pause between operations, in seconds (bounds the offered load).
    think: float = 0.02
    #: Client timeout per operation: beyond it the operation is indeterminate.
    op_timeout: float = 2.0
    partition_every: float = 2.0
    kill_every: float = 10.0
    pause_seconds: float = 5.0
    pause_gap: float = 3.0
    mangling: Mangling = ISSUE_MANGLING
    #: Load before a sink outage starts, in seconds (the outage itself lasts ``seconds``).
    sink_lead: float = 3.0
    #: The disk nemesis: the tmpfs holding one node's data dir (bytes); fault cycles; how long each
    #: fault lasts and the load between faults (seconds); whether every other cycle fails fsyncs (the
    #: shim) instead of filling the disk; how long the node may take to take writes again.
    disk_bytes: int = DEFAULT_DISK_BYTES
    disk_cycles: int = 3
    disk_fault_seconds: float = 2.0
    disk_gap: float = 1.0
    disk_fsync_failures: bool = False
    disk_recover_timeout: float = 15.0
    converge_timeout: float = 60.0
    sink_timeout: float = 90.0
    seed: int = 1
    #: Gossip keys of cluster.yaml to override (none: the shipped timings are what is measured).
    gossip: tuple[tuple[str, int], ...] = ()


# -- the cluster ---------------------------------------------------------------------------------------


class Cluster:
    """``likes node`` processes started, killed, paused and restarted one by one, plus the fault plan."""

    HOST = "127.0.0.1"

    def __init__(
        self,
        root: Path,
        n_nodes: int,
        *,
        checkpoint: dict[str, Any] | None = None,
        gossip: dict[str, int] | None = None,
    ) -> None:
        self.root = root
        self.names = [f"n{i + 1}" for i in range(n_nodes)]
        ports = free_ports(2 * n_nodes, self.HOST)
        self.http_ports = {name: ports[i] for i, name in enumerate(self.names)}
        self.gossip_ports = {name: ports[n_nodes + i] for i, name in enumerate(self.names)}
        self.urls = {name: f"http://{self.HOST}:{port}" for name, port in self.http_ports.items()}
        self.plan_path = root / "faults.json"
        self.config_path = root / "cluster.yaml"
        self.config_path.write_text(self._cluster_yaml(checkpoint, gossip or {}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LIKES_")}
        self.env[SECRET_ENV] = secrets.token_urlsafe(32)
        self.env[FAULTS_ENV] = str(self.plan_path)
        #: Variables for one node only, over ``env`` (the fsync shim of the disk nemesis's victim).
        self.node_env: dict[str, dict[str, str]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.set_plan()

    def _cluster_yaml(self, checkpoint: dict[str, Any] | None, gossip: dict[str, int]) -> str:
        raw = copy.deepcopy(shipped_file())
        raw["nodes"] = [
            {
                "name": n,
                "host": self.HOST,
                "http_port": self.http_ports[n],
                "gossip_port": self.gossip_ports[n],
            }
            for n in self.names
        ]
        storage = raw.get("storage")
        raw["storage"] = {
            **(storage if isinstance(storage, dict) else {}),
            "data_dir": str(self.root / "data"),
        }
        raw["security"] = {"secret_env": SECRET_ENV}
        raw["gossip"] = {**(raw.get("gossip") or {}), **gossip}
        if checkpoint:
            raw["checkpoint"] = {**(raw.get("checkpoint") or {}), **checkpoint}
        return "# Written by bench.faults from the shipped cluster.yaml.\n" + yaml.safe_dump(
            raw, sort_keys=False
        )

    def gossip_address(self, name: str) -> str:
        return f"{self.HOST}:{self.gossip_ports[name]}"

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def set_plan(self, blocked: Iterable[tuple[str, str]] = (), via: dict[str, int] | None = None) -> None:
        """Cut gossip between each pair of node names, and send each ``via`` node's gossip to a port."""
        plan = {
            "blocked": [[self.gossip_address(a), self.gossip_address(b)] for a, b in blocked],
            "via": {self.gossip_address(n): f"{self.HOST}:{port}" for n, port in (via or {}).items()},
        }
        temporary = self.plan_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(plan))
        os.replace(temporary, self.plan_path)  # atomic: a node never reads half a plan

    def spawn(self, name: str) -> None:
        with open(self.root / f"{name}.log", "ab") as output:
            self.processes[name] = subprocess.Popen(
                [*likes_command(), "node", "--config", str(self.config_path), "--name", name],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **self.node_env.get(name, {})},
            )

    async def start(self, session: aiohttp.ClientSession, name: str, timeout: float = 45.0) -> None:
        """Start ``name`` and wait until it serves."""
        self.spawn(name)
        await self.wait_serving(session, [name], timeout)

    async def start_all(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Start every node at once; return when each serves and sees every member alive."""
        for name in self.names:
            self.spawn(name)
        await self.wait_serving(session, self.names, timeout)

        async def all_alive() -> bool:
            views = await asyncio.gather(
                *(get_json(session, self.urls[n] + "/v1/cluster") for n in self.names)
            )
            return all(
                v is not None and [m["state"] for m in v["members"]] == ["alive"] * len(self.names)
                for v in views
            )

        await until(all_alive, timeout, "every node sees every member alive")

    async def wait_serving(self, session: aiohttp.ClientSession, names: list[str], timeout: float) -> None:
        async def serving() -> bool:
            for name in names:
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            answers = await asyncio.gather(*(get_json(session, self.urls[n] + "/healthz") for n in names))
            return all(a is not None for a in answers)

        await until(serving, timeout, f"{', '.join(names)} serve")

    def kill(self, name: str) -> None:
        """``kill -9`` and reap."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=10)
        self.paused.discard(name)

    def pause(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def stop_all(self) -> None:
        """SIGCONT + SIGTERM every node we started; SIGKILL after a bounded wait."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


async def get_json(session: aiohttp.ClientSession, url: str, timeout: float = 1.0) -> Any:
    """``GET url`` as JSON, or None when the node does not answer in time."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            return await response.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> float:
    """Poll ``check`` until true; the seconds it took. TimeoutError naming ``what`` past ``timeout``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(every)


# -- the workload --------------------------------------------------------------------------------------


@dataclass
class Op:
    """One client operation and what the client learned of it."""

    kind: Kind
    node: str
    outcome: Outcome
    start: float
    end: float
    #: The ``changed`` of a 200's answer (None otherwise). A node logs only changes, and answers a
    #: write that changed nothing without its log: only an acknowledged change shows it takes writes.
    changed: bool | None = None


@dataclass
class Pair:
    """One (item, user) pair and its history; ``home`` None: a like-only pair, any node."""

    item: int
    user: int
    home: str | None
    ops: list[Op] = field(default_factory=list)
    retired: bool = False


class Workload:
    """Concurrent clients writing likes and unlikes, each operation recorded; bounded in count and time."""

    def __init__(self, cluster: Cluster, settings: Settings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.pairs: list[Pair] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.max_ops_per_client = int(max(settings.seconds, 10) * 200)

    def start(self) -> None:
        # A fresh connection per operation: a refused connect is then a clean "nothing sent".
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(self.settings.clients)]

    async def stop(self) -> None:
        """No new operations; wait for those in flight (each bounded by the client timeout)."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.op_timeout * 3)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _client(self, index: int) -> None:
        s = self.settings
        rng = random.Random(s.seed * 1000 + index)
        names = self.cluster.names
        next_user = (index + 1) * 1_000_000

        def new_pair(home: str | None) -> Pair:
            nonlocal next_user
            next_user += 1
            pair = Pair(rng.randrange(s.items), next_user, home)
            self.pairs.append(pair)
            return pair

        toggles = [new_pair(rng.choice(names)) for _ in range(s.toggle_pairs)]
        likes = [new_pair(None) for _ in range(s.like_pairs)]
        for _ in range(self.max_ops_per_client):
            if self._stop.is_set():
                return
            kind: Kind
            if rng.random() < s.like_only_share:
                slot = rng.randrange(len(likes))
                pair, kind, node = likes[slot], "like", rng.choice(names)
                if len(pair.ops) >= 3:  # enough retries of this one: a fresh pair
                    likes[slot] = new_pair(None)
            else:
                slot = rng.randrange(len(toggles))
                pair = toggles[slot]
                assert pair.home is not None
                attempted = [op for op in pair.ops if op.outcome not in ("fail", "refused")]
                liked = bool(attempted) and attempted[-1].kind == "like"
                kind = "unlike" if liked and rng.random() < 0.7 else "like"
                node = pair.home
            await self._invoke(pair, kind, node)
            if pair.home is not None and pair.ops[-1].outcome == "info":
                pair.retired = True  # it may still land after anything we send next
                toggles[toggles.index(pair)] = new_pair(rng.choice(names))
            await asyncio.sleep(s.think)

    async def _invoke(self, pair: Pair, kind: Kind, node: str) -> None:
        assert self._session is not None
        url = f"{self.cluster.urls[node]}/v1/items/{CONTENT_TYPE}/{pair.item}/likes/{pair.user}"
        started = time.monotonic()
        outcome: Outcome
        changed: bool | None = None
        try:
            async with self._session.request(
                "PUT" if kind == "like" else "DELETE",
                url,
                timeout=aiohttp.ClientTimeout(total=self.settings.op_timeout),
            ) as response:
                body = await response.read()
                status = response.status
            # 4xx: rejected, changes nothing (429 included); 5xx may have landed (write_timeout does),
            # except 503 not_durable: the node says the write changed nothing, which the checker holds it to.
            if status == 503 and error_code(body) == "not_durable":
                outcome = "refused"
            else:
                outcome = "ok" if status == 200 else "fail" if 400 <= status < 500 else "info"
            if outcome == "ok":
                changed = answer_json(body).get("changed") is True
        except aiohttp.ClientConnectorError:
            outcome = "fail"  # the connection was never made: nothing was sent
        except (aiohttp.ClientError, TimeoutError, OSError):
            outcome = "info"  # sent, then timed out or reset: it may or may not have landed
        pair.ops.append(Op(kind, node, outcome, started, time.monotonic(), changed))


# -- the checker ---------------------------------------------------------------------------------------


def answer_json(body: bytes) -> dict[str, Any]:
    """An answer's JSON object; empty if it is not one."""
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def error_code(body: bytes) -> str | None:
    """The ``code`` of an error answer's ``{"error": {"code", ...}}``, None if it has none."""
    error = answer_json(body).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


@dataclass
class NodeItem:
    """What one node says of one item: its liker list (in order, as paged) and its counts."""

    likers: list[int]
    count: int
    batch_count: int


def possible_states(pair: Pair) -> set[bool]:
    """Whether ``pair`` may end liked (True) and/or unliked (False), given what the client learned.

    The last acknowledged operation decides; any indeterminate operation may have landed at any
    time after it was sent, so its outcome stays possible too. Failed and refused operations never
    happened.
    """
    acked = [op for op in pair.ops if op.outcome == "ok"]
    states = {acked[-1].kind == "like"} if acked else {False}
    states |= {op.kind == "like" for op in pair.ops if op.outcome == "info"}
    return states


@dataclass
class Verdict:
    """The checker's findings; ``examples`` holds a few of each for the report."""

    operations: int = 0
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    #: Operations answered 503 not_durable, and pairs where one of them shows (counted in ``phantom``).
    refused: int = 0
    refused_visible: int = 0
    pairs: int = 0
    lost: int = 0
    phantom: int = 0
    count_mismatches: int = 0
    duplicate_likers: int = 0
    unequal_items: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, what: str, example: str) -> None:
        found = self.examples.setdefault(what, [])
        if len(found) < 5:
            found.append(example)

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.phantom or self.count_mismatches or self.duplicate_likers or self.unequal_items
        )


def check(pairs: list[Pair], states: dict[str, dict[int, NodeItem]]) -> Verdict:
    """Compare every node's state with the history: lost, phantom, counts, duplicates, equality.

    Lost and phantom are counted once per pair (on the first node; the nodes must be equal, and
    ``unequal_items`` says where they are not), over the pairs that got at least one operation.
    """
    verdict = Verdict()
    ops = [op for pair in pairs for op in pair.ops]
    verdict.operations = len(ops)
    outcomes = Counter(op.outcome for op in ops)
    verdict.acknowledged, verdict.failed, verdict.indeterminate = (
        outcomes["ok"],
        outcomes["fail"],
        outcomes["info"],
    )
    verdict.refused = outcomes["refused"]
    touched = [pair for pair in pairs if pair.ops]
    verdict.pairs = len(touched)
    for node, node_items in states.items():
        for item, held in node_items.items():
            if len(held.likers) != len(set(held.likers)):
                verdict.duplicate_likers += 1
                verdict.note("duplicate_likers", f"{node} item {item}")
            if not held.count == held.batch_count == len(set(held.likers)):
                verdict.count_mismatches += 1
                verdict.note(
                    "count_mismatches",
                    f"{node} item {item}: count {held.count}, /v1/counts {held.batch_count}, "
                    f"{len(set(held.likers))} likers",
                )
    first = next(iter(states))
    for item in sorted({item for node_items in states.values() for item in node_items}):
        sets = {node: frozenset(states[node].get(item, NodeItem([], 0, 0)).likers) for node in states}
        if len(set(sets.values())) > 1:
            verdict.unequal_items += 1
            verdict.note(
                "unequal_items", f"item {item}: " + ", ".join(f"{n} {len(s)}" for n, s in sets.items())
            )
    held_by = {item: set(node_item.likers) for item, node_item in states[first].items()}
    explained: dict[int, set[int]] = {}
    for pair in touched:
        explained.setdefault(pair.item, set()).add(pair.user)
        present = pair.user in held_by.get(pair.item, set())
        possible = possible_states(pair)
        if present not in possible:
            history = " ".join(f"{op.kind}@{op.node}:{op.outcome}" for op in pair.ops)
            if refused_effect(pair, present) is not None:
                verdict.phantom += 1
                verdict.refused_visible += 1
                verdict.note("refused_visible", f"item {pair.item} user {pair.user}: {history}")
            elif present:
                verdict.phantom += 1
                verdict.note("phantom", f"item {pair.item} user {pair.user}: {history}")
            else:
                verdict.lost += 1
                verdict.note("lost", f"item {pair.item} user {pair.user}: {history}")
    for item, users in held_by.items():
        for user in sorted(users - explained.get(item, set())):
            verdict.phantom += 1
            verdict.note("phantom", f"item {item} user {user}: never attempted")
    return verdict


def refused_effect(pair: Pair, present: bool) -> Op | None:
    """A refused operation whose effect is what the node holds (a refused like and the liker present,
    a refused unlike and the liker gone), sent after the last acknowledged operation of its kind (none
    re-did it), else None. Only called when the history cannot explain ``present`` otherwise; an
    acknowledged operation of the other kind after it does not excuse it (an unlike acknowledged by a
    node that did not hold the refused like, which then came back from a peer, say)."""
    kind = "like" if present else "unlike"
    redone = max((i for i, op in enumerate(pair.ops) if op.outcome == "ok" and op.kind == kind), default=-1)
    for op in pair.ops[redone + 1 :]:
        if op.outcome == "refused" and op.kind == kind:
            return op
    return None


async def read_states(
    session: aiohttp.ClientSession, cluster: Cluster, items: int
) -> dict[str, dict[int, NodeItem]]:
    """Every node's likers (through the paginated list) and counts (item and batch endpoints)."""
    states: dict[str, dict[int, NodeItem]] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    for name in cluster.names:
        url = cluster.urls[name]
        body = {"items": [{"type": CONTENT_TYPE, "id": i} for i in range(items)]}
        async with session.post(f"{url}/v1/counts", json=body, timeout=timeout) as response:
            response.raise_for_status()
            batch = (await response.json())["counts"]
        node_items: dict[int, NodeItem] = {}
        for item in range(items):
            likers: list[int] = []
            after = ""
            for _ in range(10_000):
                async with session.get(
                    f"{url}/v1/items/{CONTENT_TYPE}/{item}/likes?limit=1000{after}", timeout=timeout
                ) as response:
                    response.raise_for_status()
                    page = await response.json()
                likers += page["likers"]
                if page["next"] is None:
                    break
                after = f"&after={page['next']}"
            async with session.get(f"{url}/v1/items/{CONTENT_TYPE}/{item}", timeout=timeout) as response:
                response.raise_for_status()
                count = (await response.json())["count"]
            node_items[item] = NodeItem(likers, count, batch[item])
        states[name] = node_items
    return states


async def convergence(
    session: aiohttp.ClientSession, cluster: Cluster, healed_at: float, timeout: float
) -> tuple[float | None, float | None]:
    """Seconds from ``healed_at`` until every node shows the same state fingerprint, and until every
    node sees every member alive (None: not within ``timeout``). In-flight operations count."""
    converged: float | None = None
    alive: float | None = None
    while time.monotonic() - healed_at < timeout and (converged is None or alive is None):
        views = await asyncio.gather(
            *(get_json(session, cluster.urls[n] + "/v1/cluster") for n in cluster.names)
        )
        now = time.monotonic() - healed_at
        if all(v is not None for v in views):
            if converged is None and len({v["fingerprint"] for v in views}) == 1:
                converged = now
            if alive is None and all(m["state"] == "alive" for v in views for m in v["members"]):
                alive = now
        await asyncio.sleep(0.05)
    return converged, alive


# -- watching the failure detector ---------------------------------------------------------------------


class Watcher:
    """Polls every node's member list; records when each node first saw another in each state."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession, every: float = 0.1) -> None:
        self.cluster = cluster
        self.session = session
        self.every = every
        #: (time, observer, subject, state) at each change an observer reports.
        self.changes: list[tuple[float, str, str, str]] = []
        self.stats: dict[str, dict[str, int]] = {}
        self._last: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(name) for name in self.cluster.names))
            await asyncio.sleep(self.every)

    async def _poll(self, observer: str) -> None:
        if observer in self.cluster.paused or observer not in self.cluster.processes:
            return
        view = await get_json(self.session, self.cluster.urls[observer] + "/v1/cluster", timeout=0.5)
        if view is None:
            return
        now = time.monotonic()
        self.stats[observer] = {k: v for k, v in view["gossip"].items() if isinstance(v, int)}
        for member in view["members"]:
            key = (observer, member["name"])
            if self._last.get(key) != member["state"]:
                self._last[key] = member["state"]
                self.changes.append((now, observer, member["name"], member["state"]))

    def dead_verdicts(self, subject: str, since: float, until: float) -> dict[str, float]:
        """Observer -> seconds after ``since`` it first reported ``subject`` dead (within the window)."""
        first: dict[str, float] = {}
        for at, observer, who, state in self.changes:
            if who == subject and observer != subject and state == "dead" and since <= at <= until:
                first.setdefault(observer, at - since)
        return first

    def gossip_totals(self) -> dict[str, int]:
        names = ("members_suspected", "members_declared_dead", "refutations", "probe_failures", "frames_cut")
        return {k: sum(stats.get(k, 0) for stats in self.stats.values()) for k in names}


# -- nemeses -------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a nemesis works with."""

    cluster: Cluster
    session: aiohttp.ClientSession
    watcher: Watcher
    settings: Settings
    rng: random.Random
    sinks: Sinks | None = None
    workload: Workload | None = None
    disk: DiskFault | None = None


def grudge(kind: str, names: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """The pairs of nodes a partition of ``kind`` cuts apart."""
    order = names[:]
    rng.shuffle(order)
    if kind == "isolate":
        return [(order[0], other) for other in order[1:]]
    if kind == "bridge":  # order[0] talks to both halves, which cannot talk to each other
        rest = order[1:]
        left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    else:  # halves
        left, right = order[: len(order) // 2], order[len(order) // 2 :]
    return [(a, b) for a in left for b in right]


async def partition_nemesis(ctx: Context) -> dict[str, Any]:
    """A new random partition every ``partition_every`` seconds; healed at the end."""
    s, cluster = ctx.settings, ctx.cluster
    kinds: Counter[str] = Counter()
    end = time.monotonic() + s.seconds
    try:
        while (left := end - time.monotonic()) > 0:
            kind = ctx.rng.choice(["halves", "isolate", "bridge"])
            kinds[kind] += 1
            cluster.set_plan(blocked=grudge(kind, cluster.names, ctx.rng))
            await asyncio.sleep(min(s.partition_every, left))
    finally:
        cluster.set_plan()
    return {"partitions": dict(kinds)}


async def kill_nemesis(ctx: Context) -> dict[str, Any]:
    """``kill -9`` a random node every ``kill_every`` seconds; restart it once every other node has
    declared it dead (bounded), which also times the failure detector on a real death."""
    s, cluster = ctx.settings, ctx.cluster
    detections: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    while time.monotonic() < end:
        started = time.monotonic()
        victim = ctx.rng.choice(cluster.names)
        cluster.kill(victim)
        killed_at = time.monotonic()
        others = [n for n in cluster.names if n != victim]

        async def all_see_dead(
            victim: str = victim, at: float = killed_at, others: list[str] = others
        ) -> bool:
            return set(ctx.watcher.dead_verdicts(victim, at, time.monotonic())) >= set(others)

        with contextlib.suppress(TimeoutError):
            await until(all_see_dead, 10.0, f"every node declares {victim} dead", every=0.1)
        verdicts = ctx.watcher.dead_verdicts(victim, killed_at, time.monotonic())
        detections.append(
            {
                "victim": victim,
                "first_dead_s": round(min(verdicts.values()), 2) if verdicts else None,
                "all_dead_s": round(max(verdicts.values()), 2) if len(verdicts) == len(others) else None,
            }
        )
        await cluster.start(ctx.session, victim)
        wait = s.kill_every - (time.monotonic() - started)
        if time.monotonic() + wait >= end:
            break  # the heal is this restart: convergence is timed from it
        await asyncio.sleep(max(0.0, wait))
    all_dead = [d["all_dead_s"] for d in detections if d["all_dead_s"] is not None]
    return {
        "kills": detections,
        "kill_detection_all_s_max": max(all_dead) if all_dead else None,
        "kills_undetected_in_10s": sum(1 for d in detections if d["all_dead_s"] is None),
    }


async def pause_nemesis(ctx: Context) -> dict[str, Any]:
    """SIGSTOP a random node for ``pause_seconds``, SIGCONT, a gap, again; count the dead verdicts
    the others pass on it (each one false: the node was only paused)."""
    s, cluster = ctx.settings, ctx.cluster
    pauses: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    try:
        while time.monotonic() < end:
            victim = ctx.rng.choice(cluster.names)
            paused_at = time.monotonic()
            cluster.pause(victim)
            try:
                await asyncio.sleep(s.pause_seconds)
            finally:
                cluster.resume(victim)
            resumed_at = time.monotonic()
            last = resumed_at + s.pause_gap + s.pause_seconds > end
            if not last:
                await asyncio.sleep(s.pause_gap)
            verdicts = ctx.watcher.dead_verdicts(victim, paused_at, time.monotonic())
            pauses.append(
                {
                    "victim": victim,
                    "false_dead_verdicts": len(verdicts),
                    "first_dead_s": round(min(verdicts.values()), 2) if verdicts else None,
                    "resumed_after_s": round(resumed_at - paused_at, 2),
                }
            )
            if last:
                break  # the heal is this SIGCONT: convergence is timed from it
    finally:
        for name in list(cluster.paused):
            cluster.resume(name)
    return {
        "pauses": pauses,
        "false_dead_verdicts": sum(p["false_dead_verdicts"] for p in pauses),
    }


async def proxy_nemesis(ctx: Context) -> dict[str, Any]:
    """Every node's incoming gossip through a frame-mangling proxy; direct again at the end."""
    s, cluster = ctx.settings, ctx.cluster
    proxies = {
        name: FrameProxy(
            Cluster.HOST, cluster.gossip_ports[name], mangling=s.mangling, rng=random.Random(ctx.rng.random())
        )
        for name in cluster.names
    }
    try:
        for proxy in proxies.values():
            await proxy.start()
        cluster.set_plan(via={name: proxy.port for name, proxy in proxies.items()})
        await asyncio.sleep(s.seconds)
    finally:
        cluster.set_plan()
        totals: Counter[str] = Counter()
        for proxy in proxies.values():
            totals.update(proxy.counters)
            await proxy.stop()
    return {"mangling": asdict(s.mangling), "frames": dict(totals)}


class DiskFault:
    """The disk nemesis's tools for one node: its data dir on a small tmpfs, a filler for it and, with
    fsync failures, the shim (in ``env``, for that node only) and its trigger file. Set up before the
    cluster starts; unmounted after it stops. ``DiskFaultUnavailable`` says why it cannot be set up."""

    def __init__(self, root: Path, victim: str, settings: Settings) -> None:
        self.victim = victim
        self.tmpfs = Tmpfs(root / "data" / victim, settings.disk_bytes)
        self.filler = Filler(self.tmpfs.path)
        self.trigger = root / "fail-fsync"
        self.env: dict[str, str] = {}
        self._shim = root / "shim" if settings.disk_fsync_failures else None

    def __enter__(self) -> DiskFault:
        if self._shim is not None:
            self.env = fail_fsync_env(build_fail_fsync(self._shim), self.trigger)
        self.tmpfs.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.trigger.unlink(missing_ok=True)
        self.tmpfs.unmount()


async def disk_nemesis(ctx: Context) -> dict[str, Any]:
    """One node's disk filled (or, every other cycle with ``disk_fsync_failures``, its fsyncs failing)
    for ``disk_fault_seconds``, then freed; up to ``disk_cycles`` times within ``seconds``. After each,
    the time until the node takes writes again: its first acknowledged write sent after the space was
    freed, and ``/readyz`` 200. A node that does not come back ends the cycles (more would measure
    nothing). Then ``kill -9`` and a restart (the heal), so what its log replays is checked too."""
    s, cluster, disk, workload = ctx.settings, ctx.cluster, ctx.disk, ctx.workload
    assert disk is not None and workload is not None
    victim = disk.victim
    cycles: list[dict[str, Any]] = []
    end = time.monotonic() + s.seconds
    await asyncio.sleep(min(s.disk_gap, s.seconds))
    for cycle in range(s.disk_cycles):
        kind = "fsync" if s.disk_fsync_failures and cycle % 2 == 1 else "full"
        began = time.monotonic()
        try:
            if kind == "full":
                await asyncio.to_thread(disk.filler.fill)
            else:
                disk.trigger.touch()
            await asyncio.sleep(s.disk_fault_seconds)
            ready_while = await http_status(ctx.session, cluster.urls[victim] + "/readyz")
        finally:  # cancelled or not, the fault ends here (an unlink: instant)
            disk.filler.free()
            disk.trigger.unlink(missing_ok=True)
        freed = time.monotonic()
        writes_again, ready_again = await back_to_writes(ctx, victim, freed, s.disk_recover_timeout)
        refused = sum(
            1
            for pair in workload.pairs
            for op in pair.ops
            if op.node == victim and op.outcome == "refused" and op.start >= began
        )
        cycles.append(
            {
                "kind": kind,
                "fault_s": round(freed - began, 2),
                "refused": refused,
                "readyz_while_faulty": ready_while,
                "writes_again_s": None if writes_again is None else round(writes_again, 2),
                "ready_again_s": None if ready_again is None else round(ready_again, 2),
            }
        )
        if writes_again is None or time.monotonic() + s.disk_gap + s.disk_fault_seconds > end:
            break
        await asyncio.sleep(s.disk_gap)
    cluster.kill(victim)
    await cluster.start(ctx.session, victim)
    again = [c["writes_again_s"] for c in cycles]
    return {
        "disk_victim": victim,
        "disk_cycles": cycles,
        "writes_again_s_max": max(again) if again and None not in again else None,
    }


async def http_status(session: aiohttp.ClientSession, url: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET url``, None when nothing answers in time."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def back_to_writes(
    ctx: Context, victim: str, freed: float, timeout: float
) -> tuple[float | None, float | None]:
    """Seconds from ``freed`` until ``victim`` acknowledged a write sent after it that changed something
    (the workload's history), and until its ``/readyz`` answered 200; None for either not seen within
    ``timeout``."""
    assert ctx.workload is not None
    writes: float | None = None
    ready: float | None = None
    for _ in range(int(timeout / 0.05) + 1):
        if writes is None:
            ends = []
            for pair in ctx.workload.pairs:
                for op in reversed(pair.ops):  # one client's, in order: only the newest are after ``freed``
                    if op.start < freed:
                        break
                    if op.node == victim and op.outcome == "ok" and op.changed:
                        ends.append(op.end)
            writes = min(ends) - freed if ends else None
        if ready is None and await http_status(ctx.session, ctx.cluster.urls[victim] + "/readyz") == 200:
            ready = time.monotonic() - freed
        if (writes is not None and ready is not None) or time.monotonic() - freed > timeout:
            break
        await asyncio.sleep(0.05)
    return writes, ready


async def sinks_nemesis(ctx: Context) -> dict[str, Any]:
    """Load, then Redis and MySQL cut (blackholed) for ``seconds``, then restored."""
    assert ctx.sinks is not None
    await asyncio.sleep(ctx.settings.sink_lead)
    outage_started = time.monotonic()
    for proxy in ctx.sinks.proxies:
        proxy.cut("blackhole")
    try:
        await asyncio.sleep(ctx.settings.seconds)
    finally:
        for proxy in ctx.sinks.proxies:
            proxy.restore()
    return {"outage_s": round(time.monotonic() - outage_started, 2)}


NEMESIS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "partition": partition_nemesis,
    "kill": kill_nemesis,
    "pause": pause_nemesis,
    "proxy": proxy_nemesis,
    "sinks": sinks_nemesis,
    "disk": disk_nemesis,
}


# -- Redis and MySQL -----------------------------------------------------------------------------------


class Sinks:
    """A private Redis prefix and MySQL database, reached through cut-able proxies; cleaned up after."""

    def __init__(self, redis_url: str = DEFAULT_REDIS_URL, mysql_url: str = DEFAULT_MYSQL_URL) -> None:
        self.redis_url = redis_url
        self.mysql = urlsplit(mysql_url)
        self.prefix = f"likes-faults-{secrets.token_hex(6)}:"
        self.database = f"likes_faults_{secrets.token_hex(6)}"
        redis = urlsplit(redis_url)
        self.redis_proxy = TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
        self.mysql_proxy = TcpProxy(self.mysql.hostname or "127.0.0.1", self.mysql.port or 3306)
        self.proxies = (self.redis_proxy, self.mysql_proxy)

    async def __aenter__(self) -> Sinks:
        from redis.asyncio import Redis

        try:
            client = Redis.from_url(self.redis_url, socket_timeout=3, socket_connect_timeout=3)
            try:
                await client.ping()
            finally:
                await client.aclose()
            await self._mysql(f"CREATE DATABASE {self.database}")
        except Exception as exc:
            raise SinkServersUnavailable(f"Redis or MySQL is not reachable: {exc!r}") from exc
        for proxy in self.proxies:
            await proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        from redis.asyncio import Redis

        for proxy in self.proxies:
            await proxy.stop()
        with contextlib.suppress(Exception):
            await self._mysql(f"DROP DATABASE IF EXISTS {self.database}")
        client = Redis.from_url(self.redis_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()

    def checkpoint_settings(self) -> dict[str, Any]:
        user = self.mysql.username or "root"
        password = f":{self.mysql.password}" if self.mysql.password else ""
        return {
            "redis_url": f"redis://127.0.0.1:{self.redis_proxy.port}/0",
            "redis_prefix": self.prefix,
            "mysql_url": f"mysql://{user}{password}@127.0.0.1:{self.mysql_proxy.port}/{self.database}",
        }

    async def _mysql(self, statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
        import asyncmy

        connection = await asyncio.wait_for(
            asyncmy.connect(
                host=self.mysql.hostname or "127.0.0.1", port=self.mysql.port or 3306,
                user=self.mysql.username or "root", password=self.mysql.password or "",
                database=database, autocommit=True, connect_timeout=3,
            ),
            5,
        )  # fmt: skip
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(statement)
                return list(await cursor.fetchall())
        finally:
            connection.close()

    async def equal(self, expected: dict[int, set[int]]) -> tuple[int, int]:
        """How many items Redis and MySQL each hold differently from ``expected`` (count and users)."""
        from node.checkpoint import CheckpointSink, MysqlSink, RedisSink
        from node.state.item import ItemKey

        redis: CheckpointSink = RedisSink(self.redis_url, prefix=self.prefix)
        mysql: CheckpointSink = MysqlSink(f"{self.mysql.scheme}://{self.mysql.netloc}/{self.database}")
        try:
            wrong = [0, 0]
            for item, users in expected.items():
                key = ItemKey(CONTENT_TYPE, item)
                for i, sink in enumerate((redis, mysql)):
                    try:
                        held = await sink.read_item(key)
                    except Exception:
                        held = (-1, set())
                    if held != (len(users), users):
                        wrong[i] += 1
            return wrong[0], wrong[1]
        finally:
            await redis.close()
            await mysql.close()

    async def duplicate_records(self) -> int:
        """``like_records`` rows sharing one (user, item): the unique key must make this zero."""
        rows = await self._mysql(
            "SELECT user_id, content_id, content_type FROM like_records"
            " GROUP BY user_id, content_id, content_type HAVING COUNT(*) > 1",
            self.database,
        )
        return len(rows)


# -- one scenario --------------------------------------------------------------------------------------


async def run_scenario(nemesis: str, settings: Settings, root: Path) -> dict[str, Any]:
    """Start a cluster, run the workload under ``nemesis``, heal, time convergence, check; the figures."""
    if nemesis not in NEMESIS:
        raise ValueError(f"unknown nemesis {nemesis!r}; one of {', '.join(NEMESES)}")
    root.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        sinks = await stack.enter_async_context(Sinks()) if nemesis == "sinks" else None
        # Mounted before the cluster starts, unmounted after it stops (the stack unwinds in reverse).
        disk = stack.enter_context(DiskFault(root, DISK_VICTIM, settings)) if nemesis == "disk" else None
        cluster = Cluster(
            root,
            settings.nodes,
            checkpoint=sinks.checkpoint_settings() if sinks else None,
            gossip=dict(settings.gossip),
        )
        if disk is not None:
            cluster.node_env[disk.victim] = disk.env
        stack.callback(cluster.stop_all)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await cluster.start_all(session)
        watcher = Watcher(cluster, session)
        watcher.start()
        stack.push_async_callback(watcher.stop)
        workload = Workload(cluster, settings)
        rng = random.Random(settings.seed)
        ctx = Context(cluster, session, watcher, settings, rng, sinks, workload, disk)
        workload.start()
        started = time.monotonic()
        try:
            figures = await NEMESIS[nemesis](ctx)
        finally:
            healed_at = time.monotonic()
            await workload.stop()
        load_s = healed_at - started
        converge_s, alive_s = await convergence(session, cluster, healed_at, settings.converge_timeout)
        states = await read_states(session, cluster, settings.items)
        verdict = check(workload.pairs, states)
        result: dict[str, Any] = {
            "nemesis": nemesis,
            "nodes": settings.nodes,
            "fault_s": round(load_s, 1),
            "operations": verdict.operations,
            "acknowledged": verdict.acknowledged,
            "failed": verdict.failed,
            "indeterminate": verdict.indeterminate,
            "refused": verdict.refused,
            "refused_visible": verdict.refused_visible,
            "pairs": verdict.pairs,
            "lost": verdict.lost,
            "phantom": verdict.phantom,
            "count_mismatches": verdict.count_mismatches,
            "duplicate_likers": verdict.duplicate_likers,
            "unequal_items": verdict.unequal_items,
            "converge_s": None if converge_s is None else round(converge_s, 2),
            "all_alive_s": None if alive_s is None else round(alive_s, 2),
            "likers_held": sum(len(i.likers) for i in states[cluster.names[0]].values()),
            "examples": verdict.examples,
            **figures,
            "gossip": watcher.gossip_totals(),
        }
        if sinks is not None:
            expected = {item: set(held.likers) for item, held in states[cluster.names[0]].items()}

            async def sinks_equal() -> bool:
                return await sinks.equal(expected) == (0, 0)

            result["sinks_equal_s"] = None
            with contextlib.suppress(TimeoutError):
                await until(sinks_equal, settings.sink_timeout, "Redis and MySQL equal the nodes", every=0.5)
                result["sinks_equal_s"] = round(time.monotonic() - healed_at, 2)
            result["sinks_wrong_items"] = dict(
                zip(("redis", "mysql"), await sinks.equal(expected), strict=True)
            )
            result["mysql_duplicate_records"] = await sinks.duplicate_records()
        result["met"] = met(result)
        return result


def met(result: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals for one scenario."""
    goals = {
        "lost == 0": result["lost"] == 0,
        "phantom == 0": result["phantom"] == 0,
        "counts == set sizes": result["count_mismatches"] == 0 and result["duplicate_likers"] == 0,
        "nodes equal": result["unequal_items"] == 0 and result["converge_s"] is not None,
        f"equal within {CONVERGE_GOAL:.0f} s of heal": (
            result["converge_s"] is not None and result["converge_s"] <= CONVERGE_GOAL
        ),
    }
    if "sinks_equal_s" in result:
        goals["Redis/MySQL equal the nodes"] = (
            result["sinks_equal_s"] is not None and result["mysql_duplicate_records"] == 0
        )
    if "disk_cycles" in result:
        cycles = result["disk_cycles"]
        goals["refused writes absent"] = result["refused_visible"] == 0
        goals["writes taken again after every fault, without a restart"] = bool(cycles) and all(
            c["writes_again_s"] is not None for c in cycles
        )
        goals["/readyz 503 during each fault and 200 after"] = bool(cycles) and all(
            c["readyz_while_faulty"] == 503 and c["ready_again_s"] is not None for c in cycles
        )
    return goals


# -- the command ---------------------------------------------------------------------------------------

#: The issue's long-run durations (seconds of faults) per nemesis.
LONG_SECONDS = {"partition": 60.0, "kill": 60.0, "pause": 32.0, "proxy": 60.0, "sinks": 30.0, "disk": 40.0}


def run(
    nemeses: list[str],
    *,
    seconds: float | None,
    nodes: int,
    out: Path,
    quick: bool = False,
    fsync_failures: bool = False,
) -> list[dict[str, Any]]:
    """Each nemesis in turn on a fresh cluster; writes ``faults.json`` under ``out``. A nemesis that
    cannot run here (``disk`` without root) is a row saying why, and a goal missed."""
    results = []
    with tempfile.TemporaryDirectory(prefix="likes-faults-") as temp:
        for nemesis in nemeses:
            length = seconds if seconds is not None else (6.0 if quick else LONG_SECONDS[nemesis])
            # A paused node holds each client that picks it for a whole timeout: more, shorter ones.
            pause = nemesis == "pause"
            settings = Settings(
                nodes=nodes,
                seconds=length,
                clients=(16 if pause else 6) if quick else (20 if pause else 10),
                op_timeout=1.0 if pause else 2.0,
                disk_cycles=2 if quick else 8,
                disk_fsync_failures=fsync_failures,
            )
            print(f"# {nemesis}: {nodes} nodes, {length:.0f} s of faults", flush=True)
            try:
                results.append(asyncio.run(run_scenario(nemesis, settings, Path(temp) / nemesis)))
            except DiskFaultUnavailable as exc:
                print(f"# {nemesis}: cannot run here: {exc}", flush=True)
                results.append({"nemesis": nemesis, "not_run": str(exc), "met": {"ran": False}})
            print(render(results[-1:]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def render(results: list[dict[str, Any]]) -> str:
    """A markdown table of the figures."""
    lines = [
        "| nemesis | nodes | fault s | operations | acknowledged | indeterminate | lost | phantom "
        "| count != set | converge s | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "not_run" in r:
            lines.append(f"| {r['nemesis']} | not run: {r['not_run']} |" + " |" * 9)
            continue
        notes = []
        if "disk_cycles" in r:
            notes.append(
                f"refused {r['refused']} (visible after: {r['refused_visible']}); "
                + ", ".join(
                    f"{c['kind']} {c['fault_s']} s: writes again after {c['writes_again_s']} s, "
                    f"/readyz {c['readyz_while_faulty']} then 200 after {c['ready_again_s']} s"
                    for c in r["disk_cycles"]
                )
            )
        if "false_dead_verdicts" in r:
            notes.append(f"false dead verdicts {r['false_dead_verdicts']} in {len(r['pauses'])} pauses")
        if "kill_detection_all_s_max" in r:
            notes.append(
                f"kill detected by all in <= {r['kill_detection_all_s_max']} s ({len(r['kills'])} kills)"
            )
        if "frames" in r:
            f = r["frames"]
            notes.append(
                f"frames {f.get('frames', 0)}: dropped {f.get('dropped', 0)}, "
                f"duplicated {f.get('duplicated', 0)}, reordered {f.get('reordered', 0)}, "
                f"replayed {f.get('replayed', 0)}"
            )
        if "partitions" in r:
            notes.append("partitions " + ", ".join(f"{k} {v}" for k, v in sorted(r["partitions"].items())))
        if "sinks_equal_s" in r:
            notes.append(
                f"outage {r['outage_s']} s; Redis/MySQL equal {r['sinks_equal_s']} s after heal, "
                f"duplicate records {r['mysql_duplicate_records']}"
            )
        lines.append(
            f"| {r['nemesis']} | {r['nodes']} | {r['fault_s']} | {r['operations']} | {r['acknowledged']} "
            f"| {r['indeterminate']} | {r['lost']} | {r['phantom']} | {r['count_mismatches']} "
            f"| {r['converge_s']} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def all_met(results: list[dict[str, Any]]) -> bool:
    return all(all(r["met"].values()) for r in results)
