"""Damage inside a node's log or item store, with real ``likes node`` and ``likes up`` processes.

A node alone, so whatever it holds after a restart came from its own disk, not from peers: damage in
the middle of the log loses the damaged records only, and a damaged item store stops the node until
the operator says it may start without what is damaged.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.launch import likes_command
from node.durable.wal import DISCARD_FLAG
from node.state.item import ItemKey
from tests.node.processes import NodeProcesses

pytestmark = pytest.mark.cluster

#: Likes, one per request and so one log record each.
LIKES = 2_000
FLAG = DISCARD_FLAG


def flip(path: Path, offset: int, count: int = 8) -> None:
    """Invert ``count`` bytes of ``path`` from ``offset``, in place."""
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    path.write_bytes(bytes(data))


def like_all(solo: NodeProcesses, item: str, users: range) -> None:
    """One request per like, a few at a time; each must be acknowledged."""
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(lambda u: solo.call("solo", "PUT", f"/v1/items/{item}/likes/{u}"), users):
            pass


def test_eight_bytes_flipped_mid_log_lose_only_the_damaged_records(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",))
    try:
        solo.start("solo")
        like_all(solo, "post/1000", range(LIKES))
        solo.kill("solo")  # no flush at a kill: every like is in the log alone
        (segment,) = (solo.data_dir("solo") / "wal").glob("wal-*.log")
        flip(segment, segment.stat().st_size // 2)
        solo.start("solo")
        held = solo.likers("solo", "post/1000")
        assert held <= set(range(LIKES))
        # 8 bytes overlap at most two records of one like each; every other record is replayed.
        assert LIKES - 2 <= len(held) < LIKES, f"{LIKES - len(held)} likes lost"
        output = solo.log("solo").read_text()
        assert "write-ahead log damaged" in output and "skipped" in output
    finally:
        solo.stop_all()


def start_refused(solo: NodeProcesses) -> subprocess.CompletedProcess[str]:
    """``likes node`` started without the flag; it must refuse to start."""
    return subprocess.run(
        [*likes_command(), "node", "--config", str(solo.config), "--name", "solo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=solo.env,
    )


def flip_state(items: Path, item: bytes) -> None:
    """Flip one byte of the item's stored state, as bit rot would, through SQLite itself (a byte
    flipped in the file may land in free space)."""
    with contextlib.closing(sqlite3.connect(items)) as db:
        (state,) = db.execute("SELECT state FROM items WHERE key = ?", (item,)).fetchone()
        rotten = state[:-1] + bytes([state[-1] ^ 0x01])
        db.execute("UPDATE items SET state = ? WHERE key = ?", (rotten, item))
        db.commit()


def test_a_damaged_item_state_stops_the_node_unless_the_operator_discards_it(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",))
    wal = solo.data_dir("solo") / "wal"
    try:
        solo.start("solo")
        like_all(solo, "post/1001", range(50))
        like_all(solo, "post/1003", range(5))
        solo.stop_all()  # a clean stop: the item store holds these
        solo.start("solo")
        like_all(solo, "post/1001", range(50, 60))
        solo.kill("solo")  # these 10 are in the log after the item store
        flip_state(wal / "items.db", ItemKey("post", 1001).to_bytes())

        refused = start_refused(solo)
        assert refused.returncode == 1
        assert "fails its checksum" in refused.stderr and FLAG in refused.stderr
        assert "Traceback" not in refused.stderr

        # ``likes up`` passes the flag on to the node it starts.
        up = subprocess.Popen(
            [*likes_command(), "up", "--config", str(solo.config), FLAG],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=solo.env,
        )
        try:
            solo.eventually(lambda: solo.reachable("solo"), "likes up starts the node")
            # The damaged state is gone from this node alone; the log after it is replayed, and the
            # other item is whole.
            assert solo.likers("solo", "post/1001") == set(range(50, 60))
            assert solo.likers("solo", "post/1003") == set(range(5))
        finally:
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=30) == 0

        # The damaged state was dropped: a start without the flag works.
        solo.start("solo")
        assert solo.likers("solo", "post/1001") == set(range(50, 60))
    finally:
        solo.stop_all()


def test_likes_node_sets_a_damaged_item_store_aside_when_told_to(tmp_path: Path) -> None:
    solo = NodeProcesses(tmp_path, ("solo",))
    wal = solo.data_dir("solo") / "wal"
    try:
        solo.start("solo")
        like_all(solo, "post/1002", range(20))
        solo.stop_all()
        flip(wal / "items.db", 0)  # the file's header: not a database any more
        refused = start_refused(solo)
        assert refused.returncode == 1 and FLAG in refused.stderr and "Traceback" not in refused.stderr
        solo.start("solo", FLAG)
        assert solo.likers("solo", "post/1002") == set()
        assert len(list(wal.glob("items.db.damaged-*"))) == 1
        assert "discarded" in solo.log("solo").read_text()
    finally:
        solo.stop_all()
