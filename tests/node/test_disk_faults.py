"""The disk as a fault (issue 17): a node's data dir on a small tmpfs that fills up, and fsyncs that fail.

Real ``likes node`` processes and a real filesystem: the node under test keeps its data dir on a 2 MiB
tmpfs (``bench.disk.Tmpfs``, root only: skipped locally without it, failed under ``CI=true``); peers keep
theirs off it. A ``Filler`` takes every free byte; on tmpfs the log record that needs the next page is
then written short. Failing fsyncs come from an LD_PRELOAD shim (``tests/shims/fail_fsync.c``, built
with gcc at test time) while a trigger file exists; production code has no hook for either.

What the node owes its clients, and these tests check:

1. every write answered 200 is on disk: it survives ``kill -9`` and a restart, also when the disk
   filled in the middle of its log record;
2. a write answered ``503 not_durable`` changed nothing: not visible to reads on that node, not
   gossiped to its peers, not in a later snapshot, not replayed after a restart; so a client that
   retries a counter delta after its 503 gets the value it asked for, once;
3. once space is free again (or fsyncs succeed again) the node takes writes again by itself, in a
   new log segment, without a restart; ``/readyz`` answers 503 while it refuses writes and 200 after,
   and ``/healthz`` (the process answers) stays 200 throughout.

Each test gathers every violation it sees before failing, so a failure lists all of them.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.disk import (
    PAGE,
    Filler,
    MountUnavailable,
    ShimUnavailable,
    Tmpfs,
    build_fail_fsync,
    fail_fsync_env,
    shim_loaded,
)
from tests.node.checkpoint.conftest import server_unreachable
from tests.node.processes import DIRECT, NodeProcesses

pytestmark = pytest.mark.cluster

#: The node whose disk fails.
VICTIM = "n1"
#: How long a node may take to take writes again once space is free (or fsyncs succeed), in seconds.
RECOVER_WITHIN = 10.0
#: How long peers (and a restarted node) are watched for a refused write to show up, in seconds:
#: many delta intervals (20 ms) and anti-entropy rounds (200 ms) of the test cluster.
WATCH = 1.5
#: Bound on the writes a test sends to fill what is left of a page.
MAX_WRITES = 3_000
#: (share of the log's last page in use when the disk fills, pages then given back): the fill levels.
FILL_LEVELS = ((0.3, 0), (0.6, 1), (0.9, 3))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 2 MiB tmpfs where the victim keeps its data dir; unmounted and removed however the test ends."""
    mount = Tmpfs(tmp_path / "data" / VICTIM)
    try:
        mount.mount()
    except MountUnavailable as exc:
        server_unreachable(str(exc))
    try:
        yield mount
    finally:
        mount.unmount()


@pytest.fixture
def fail_fsync(tmp_path: Path) -> Path:
    """The fsync shim, compiled for this test."""
    try:
        return build_fail_fsync(tmp_path / "shim")
    except ShimUnavailable as exc:
        server_unreachable(str(exc))


# -- helpers --------------------------------------------------------------------------------------------


def answer(nodes: NodeProcesses, node: str, method: str, path: str, body: Any = None) -> tuple[int, str]:
    """A write's answer as (status, error code or ""); (0, why) when the node did not answer at all."""
    try:
        status, reply = nodes.request(node, method, path, body)
    except OSError as exc:
        return 0, f"no answer: {exc!r}"
    error = reply.get("error") if isinstance(reply, dict) else None
    return status, error.get("code", "") if isinstance(error, dict) else ""


def status_of(nodes: NodeProcesses, node: str, path: str) -> int:
    """The status of ``GET path`` (0 if nothing answers), whatever the body."""
    try:
        with DIRECT.open(nodes.urls[node] + path, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def liked(nodes: NodeProcesses, node: str, item: str, user: int) -> bool:
    return bool(nodes.call(node, "GET", f"/v1/items/{item}/likes/{user}")["liked"])


def counter(nodes: NodeProcesses, node: str, item: str, name: str) -> int:
    return int(nodes.call(node, "GET", f"/v1/items/{item}")["counters"].get(name, 0))


def segments(data_dir: Path) -> list[Path]:
    """The log's segments, oldest first."""
    return sorted((data_dir / "wal").glob("wal-*.log"))


def watch(
    nodes: NodeProcesses, names: tuple[str, ...], seen: Callable[[str], list[str]], seconds: float
) -> dict[str, set[str]]:
    """Poll ``seen`` on every node for ``seconds``; everything each one ever showed (bounded polls)."""
    found: dict[str, set[str]] = {name: set() for name in names}
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.1) + 1):
        for name in names:
            found[name].update(seen(name))
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return found


def has_likes(nodes: NodeProcesses, node: str, item: str, users: set[int]) -> Callable[[], bool]:
    """Whether ``node`` holds exactly ``users`` as likers of ``item``, asked when called."""
    return lambda: nodes.likers(node, item) == users


def summary(where: str, shown: Iterable[str]) -> list[str]:
    """One line per refused write ``where`` showed, the refused likes of one item on a single line."""
    pattern = re.compile(r"the refused like of user (\d+)")
    users = sorted(int(m[1]) for what in shown if (m := pattern.fullmatch(what)))
    lines = [f"{where} shows {what}" for what in sorted(shown) if not pattern.fullmatch(what)]
    if users:
        more = " ..." if len(users) > 12 else ""
        lines.append(f"{where} shows the refused likes of {len(users)} users: {users[:12]}{more}")
    return lines


def like_until_refused(
    nodes: NodeProcesses, node: str, item: str, users: Iterator[int], *, refusals: int = 1
) -> tuple[list[int], list[int]]:
    """Like ``item`` one user at a time until ``refusals`` likes answered 503 not_durable; the users
    answered 200 and those refused. Fails on any other answer, and if the node never refuses."""
    acked: list[int] = []
    refused: list[int] = []
    for _ in range(MAX_WRITES):
        user = next(users)
        status, code = answer(nodes, node, "PUT", f"/v1/items/{item}/likes/{user}")
        if status == 200:
            acked.append(user)
        elif (status, code) == (503, "not_durable"):
            refused.append(user)
            if len(refused) >= refusals:
                return acked, refused
        else:
            pytest.fail(f"like of user {user} on a filling disk answered {status} {code}")
    pytest.fail(f"{MAX_WRITES} likes on a full disk and none refused: the disk never filled")


def take_writes_again(
    nodes: NodeProcesses, node: str, item: str, users: Iterator[int]
) -> tuple[float | None, list[int], list[int]]:
    """Once the fault is gone: like ``item`` every 0.1 s until one is answered 200, within
    ``RECOVER_WITHIN``. The seconds that took (None: never), the users answered 200, those refused."""
    started = time.monotonic()
    acked: list[int] = []
    refused: list[int] = []
    for _ in range(int(RECOVER_WITHIN / 0.1) + 1):
        user = next(users)
        status, code = answer(nodes, node, "PUT", f"/v1/items/{item}/likes/{user}")
        if status == 200:
            acked.append(user)
            return time.monotonic() - started, acked, refused
        if (status, code) == (503, "not_durable"):
            refused.append(user)
        if time.monotonic() - started > RECOVER_WITHIN:
            break
        time.sleep(0.1)
    return None, acked, refused


class HealthWatch:
    """Polls ``/healthz`` every 0.1 s in a thread (bounded); remembers every answer that was not 200."""

    def __init__(self, nodes: NodeProcesses, node: str, limit: int = 3_000) -> None:
        self.bad: list[str] = []
        self.polls = 0
        self._nodes, self._node, self._limit = nodes, node, limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        started = time.monotonic()
        while self.polls < self._limit and not self._stop.wait(0.1):
            self.polls += 1
            status = status_of(self._nodes, self._node, "/healthz")
            if status != 200:
                self.bad.append(f"{status} at {time.monotonic() - started:.1f} s")


# -- 1. acknowledged means on disk ------------------------------------------------------------------------


def test_every_like_answered_200_survives_a_full_disk_and_kill_9(tmp_path: Path, disk: Tmpfs) -> None:
    """The report's first case: the like answered 200 just before the first 503 was gone after kill -9.

    One node alone (what it acknowledged can come back only from its own log) and no SQLite checkpoint
    (so the log alone takes the disk's last bytes). Per fill level: likes until the log's last page is
    that full, the disk filled (then a few pages given back), likes one at a time until three answer
    503, kill -9, the filler deleted, restart; every like answered 200 must be there.
    """
    solo = NodeProcesses(tmp_path, (VICTIM,), extra="checkpoint: {sqlite: false}\n")
    filler = Filler(disk.path)
    findings: list[str] = []
    trials = 0
    try:
        solo.start(VICTIM)
        for trial, (share, pages) in enumerate(FILL_LEVELS):
            item = f"post/{100 + trial}"
            users = itertools.count(trial * 100_000 + 1)
            live = segments(solo.data_dir(VICTIM))[-1]
            before: list[int] = []
            for _ in range(MAX_WRITES):
                if live.stat().st_size >= share * PAGE:
                    break
                user = next(users)
                solo.call(VICTIM, "PUT", f"/v1/items/{item}/likes/{user}")
                before.append(user)
            used = live.stat().st_size % PAGE
            filler.fill()
            if pages:
                filler.release(pages * PAGE)
            acked, refused = like_until_refused(solo, VICTIM, item, users, refusals=3)
            size_at_kill = live.stat().st_size
            solo.kill(VICTIM)
            filler.free()
            solo.start(VICTIM)
            trials += used > 0
            held = solo.likers(VICTIM, item)
            lost = [user for user in before + acked if user not in held]
            if lost:
                last = f" (the last 200 before the first 503: user {acked[-1]})" if acked else ""
                findings.append(
                    f"fill level {trial}: log page {used} of {PAGE} B in use when the disk filled, "
                    f"{pages} page(s) given back, segment {size_at_kill} B at the kill: {len(acked)} likes "
                    f"answered 200 then {len(refused)} answered 503; lost after kill -9 and restart: "
                    f"{lost}{last}"
                )
        assert trials == len(FILL_LEVELS), "a fill level left the log's last page unused: it tested nothing"
        assert not findings, (
            f"acknowledged likes lost in {len(findings)} of {trials} trials where the log's last page was "
            "partly used:\n" + "\n".join(findings)
        )
    finally:
        solo.stop_all()


# -- 2. refused means nothing changed ----------------------------------------------------------------------


def test_writes_refused_on_a_full_disk_are_seen_nowhere_and_a_retried_counter_counts_once(
    tmp_path: Path, disk: Tmpfs
) -> None:
    """The report's second case: a like, an unlike and a counter delta answered 503 not_durable were
    visible at once, gossiped, written by the next snapshot, and a counter retried after its 503 ended
    at 20 where the client was told 10. Three nodes, n1's data dir on the full tmpfs; n1 is stopped
    cleanly (its final snapshot) once space is free, and restarted."""
    nodes = NodeProcesses(tmp_path, ("n1", "n2", "n3"))
    filler = Filler(disk.path)
    item, scratch = "post/200", "post/201"
    problems: list[str] = []
    try:
        nodes.start_all()
        for user in (1, 2, 3):
            nodes.call(VICTIM, "PUT", f"/v1/items/{item}/likes/{user}")
        for name in nodes.names:
            nodes.eventually(has_likes(nodes, name, item, {1, 2, 3}), f"{name} has the likes")
        filler.fill()
        _, (refused_scratch,) = like_until_refused(nodes, VICTIM, scratch, itertools.count(1))
        refusals = {
            "like": answer(nodes, VICTIM, "PUT", f"/v1/items/{item}/likes/50"),
            "unlike": answer(nodes, VICTIM, "DELETE", f"/v1/items/{item}/likes/1"),
            "counter": answer(nodes, VICTIM, "POST", f"/v1/items/{item}/counters/clicks", {"delta": 10}),
        }
        assert all(a == (503, "not_durable") for a in refusals.values()), f"on a full disk: {refusals}"

        def seen(node: str) -> list[str]:
            """The refused writes ``node`` shows."""
            shown = []
            if liked(nodes, node, item, 50):
                shown.append("the refused like of user 50")
            if not liked(nodes, node, item, 1):
                shown.append("the refused unlike of user 1")
            if clicks := counter(nodes, node, item, "clicks"):
                shown.append(f"the refused counter delta (clicks = {clicks})")
            if liked(nodes, node, scratch, refused_scratch):
                shown.append(f"the refused like of user {refused_scratch} on {scratch}")
            return shown

        problems += summary("n1 right after its 503s", seen(VICTIM))
        for name, shown in watch(nodes, ("n2", "n3"), seen, WATCH).items():
            problems += summary(f"peer {name}", shown)
        filler.free()
        nodes.stop(VICTIM)
        nodes.start(VICTIM)
        for name, shown in watch(nodes, nodes.names, seen, WATCH).items():
            problems += summary(f"{name} after n1's clean stop and restart", shown)

        status, body = nodes.request(VICTIM, "POST", f"/v1/items/{item}/counters/clicks", {"delta": 10})
        if status != 200:
            problems.append(f"the counter's retry, space free and n1 restarted, answered {status} {body}")
        else:
            told = body["value"]
            if told != 10:
                problems.append(f"the counter's retry answered value {told}: the client asked for +10 once")
            values: dict[str, int] = {}

            def settled() -> bool:
                values.update({n: counter(nodes, n, item, "clicks") for n in nodes.names})
                return set(values.values()) == {told}

            try:
                nodes.eventually(settled, "every node holds the value the client was told", timeout=10)
            except pytest.fail.Exception:
                problems.append(f"the client was told {told}, the nodes end at {values}")
        assert not problems, "writes answered 503 not_durable changed the data:\n" + "\n".join(problems)
    finally:
        nodes.stop_all()


# -- 3. the node comes back by itself ----------------------------------------------------------------------


def test_a_node_takes_writes_again_by_itself_once_space_is_freed_and_says_so_on_readyz(
    tmp_path: Path, disk: Tmpfs, record_property: Callable[[str, object], None]
) -> None:
    """The report's third case: after one failed write the node refused every write until restarted,
    even once space was free, and nothing said so. Now: /readyz 503 while it refuses, writes taken
    again within ``RECOVER_WITHIN`` of the filler's deletion (measured), /readyz 200 after, /healthz
    200 throughout; and after kill -9 and a restart every write answered 200 is there, none refused."""
    solo = NodeProcesses(tmp_path, (VICTIM,))
    filler = Filler(disk.path)
    health = HealthWatch(solo, VICTIM)
    item = "post/300"
    users = itertools.count(1)
    problems: list[str] = []
    try:
        solo.start(VICTIM)
        health.start()
        if (ready := status_of(solo, VICTIM, "/readyz")) != 200:
            problems.append(f"/readyz answered {ready} on a node with a healthy disk (want 200)")
        filler.fill()
        acked, refused = like_until_refused(solo, VICTIM, item, users)
        while_full = []
        for _ in range(5):
            while_full.append(status_of(solo, VICTIM, "/readyz"))
            time.sleep(0.1)
        if set(while_full) != {503}:
            problems.append(f"/readyz answered {while_full} while the node refused writes (want 503)")

        filler.free()
        freed = time.monotonic()
        took, more_acked, more_refused = take_writes_again(solo, VICTIM, item, users)
        acked += more_acked
        refused += more_refused
        record_property("writes_again_s", took)
        if took is None:
            problems.append(
                f"still refusing writes {RECOVER_WITHIN:.0f} s after space was freed, without a restart "
                f"({len(more_refused)} tries answered 503 not_durable)"
            )
        else:
            print(f"took writes again {took:.2f} s after space was freed")
            ready_after = None
            for _ in range(int(RECOVER_WITHIN / 0.1)):
                if status_of(solo, VICTIM, "/readyz") == 200:
                    ready_after = time.monotonic() - freed
                    break
                time.sleep(0.1)
            record_property("ready_again_s", ready_after)
            if ready_after is None:
                problems.append("/readyz never answered 200 again although the node takes writes")
            for _ in range(20):
                user = next(users)
                solo.call(VICTIM, "PUT", f"/v1/items/{item}/likes/{user}")
                acked.append(user)
        health.stop()
        if health.bad:
            problems.append(f"/healthz was not 200 throughout ({health.polls} polls): {health.bad[:5]}")

        solo.kill(VICTIM)
        solo.start(VICTIM)
        held = solo.likers(VICTIM, item)
        if lost := [user for user in acked if user not in held]:
            problems.append(f"answered 200, lost after kill -9 and restart: {lost}")
        if back := [user for user in refused if user in held]:
            problems.append(f"answered 503 not_durable, present after kill -9 and restart: {back}")
        assert not problems, "the node does not recover from a full disk by itself:\n" + "\n".join(problems)
    finally:
        health.stop()
        solo.stop_all()


# -- fsync failures ---------------------------------------------------------------------------------------


def test_a_failed_fsync_refuses_its_writes_everywhere_and_the_node_resumes_in_a_new_segment(
    tmp_path: Path, fail_fsync: Path, record_property: Callable[[str, object], None]
) -> None:
    """fsync answering EIO (the shim, while its trigger file exists) under a group of concurrent writes:
    each answers 503 not_durable and is absent on the node and its peer, then and after kill -9 and a
    restart (the bytes of a failed group are in the page cache: they must not be replayed). Once fsync
    works again the node takes writes by itself in a segment after the one that failed, and nothing
    answered 200 is lost across kill -9."""
    trigger = tmp_path / "fail-fsync"
    nodes = NodeProcesses(tmp_path, ("n1", "n2"))
    nodes.node_env[VICTIM] = fail_fsync_env(fail_fsync, trigger)
    item = "post/400"
    users = itertools.count(1_000)
    problems: list[str] = []
    try:
        nodes.start_all()
        assert shim_loaded(nodes.processes[VICTIM].pid, fail_fsync), "the fsync shim is not loaded in n1"
        acked = list(range(1, 11))
        for user in acked:
            nodes.call(VICTIM, "PUT", f"/v1/items/{item}/likes/{user}")
        nodes.call(VICTIM, "POST", f"/v1/items/{item}/counters/clicks", {"delta": 5})
        nodes.eventually(lambda: counter(nodes, "n2", item, "clicks") == 5, "n2 has the writes")
        failing = segments(nodes.data_dir(VICTIM))[-1].name

        trigger.touch()
        group: list[tuple[str, str, Any]] = [
            ("PUT", f"/v1/items/{item}/likes/{u}", None) for u in range(100, 106)
        ]
        group += [
            ("DELETE", f"/v1/items/{item}/likes/1", None),
            ("POST", f"/v1/items/{item}/counters/clicks", {"delta": 7}),
        ]
        with ThreadPoolExecutor(len(group)) as pool:
            answers = list(pool.map(lambda w: answer(nodes, VICTIM, *w), group))
        assert all(a == (503, "not_durable") for a in answers), f"writes while fsync fails: {answers}"
        refused = list(range(100, 106))

        def seen(node: str) -> list[str]:
            """The refused writes ``node`` shows."""
            shown = [f"the refused like of user {u}" for u in refused if liked(nodes, node, item, u)]
            if not liked(nodes, node, item, 1):
                shown.append("the refused unlike of user 1")
            if (clicks := counter(nodes, node, item, "clicks")) != 5:
                shown.append(f"the refused counter delta (clicks = {clicks}, 5 acknowledged)")
            return shown

        problems += summary("n1 right after its 503s", seen(VICTIM))
        for name, shown in watch(nodes, ("n2",), seen, WATCH).items():
            problems += summary(f"peer {name}", shown)

        trigger.unlink()
        took, more_acked, more_refused = take_writes_again(nodes, VICTIM, item, users)
        record_property("writes_again_s", took)
        acked += more_acked
        refused += more_refused
        if took is None:
            problems.append(
                f"still refusing writes {RECOVER_WITHIN:.0f} s after fsync works again, without a restart "
                f"({len(more_refused)} tries answered 503 not_durable)"
            )
        else:
            print(f"took writes again {took:.2f} s after fsync works again")
            latest = segments(nodes.data_dir(VICTIM))[-1]
            if latest.name <= failing or latest.stat().st_size == 0:
                problems.append(f"writes resumed in {latest.name}, not in a segment after {failing}")
            for _ in range(10):
                user = next(users)
                nodes.call(VICTIM, "PUT", f"/v1/items/{item}/likes/{user}")
                acked.append(user)

        nodes.kill(VICTIM)
        nodes.start(VICTIM)
        for name, shown in watch(nodes, nodes.names, seen, WATCH).items():
            problems += summary(f"{name} after n1's kill -9 and restart", shown)
        for name in nodes.names:
            held = nodes.likers(name, item)
            if lost := [user for user in acked if user not in held]:
                problems.append(f"{name} lost likes answered 200: {lost}")
        assert not problems, "writes answered 503 after a failed fsync:\n" + "\n".join(problems)
    finally:
        trigger.unlink(missing_ok=True)
        nodes.stop_all()
