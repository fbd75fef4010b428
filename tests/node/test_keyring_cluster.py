"""Key rotation on a real three-node cluster under writes, with ``likes keys``, and a stale node locked out.

The nodes are ``likes node`` processes on loopback; the writer keeps liking on all of them while the
CLI installs the new key, uses it and removes the old one. Nothing written may be lost, no frame may
be rejected along the way, and a node restarted with only the removed key must get zero frames
accepted (both sides count rejections) until it is given the new key.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from bench.launch import likes_command
from gossip.security import key_id
from tests.node.processes import SECRET_ENV, NodeProcesses

pytestmark = pytest.mark.cluster

NAMES = ("n1", "n2", "n3")
OLD = SECRET_ENV["LIKES_TEST_SECRET"]
NEW = "the-brand-new-cluster-key-0123456789"
ITEM = "post/77"


def gossip(nodes: NodeProcesses, name: str) -> dict[str, int]:
    stats: dict[str, int] = nodes.call(name, "GET", "/v1/cluster")["gossip"]
    return stats


def likes_keys(nodes: NodeProcesses, *args: str, secret: str = OLD) -> str:
    """Run ``likes keys ...`` against the cluster file, signing with ``secret``; its output."""
    env = {**nodes.env, "LIKES_TEST_SECRET": secret, "LIKES_NEW_KEY": NEW}
    result = subprocess.run(
        [*likes_command(), "keys", *args, "--config", str(nodes.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Writer(threading.Thread):
    """Likes ``ITEM`` as new users, round robin over the nodes, until stopped; remembers the answers."""

    def __init__(self, nodes: NodeProcesses) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.stop = threading.Event()
        self.acknowledged: set[int] = set()
        self.failed: list[tuple[int, object]] = []

    def run(self) -> None:
        for user in range(1, 100_000):
            if self.stop.is_set():
                return
            try:
                status, body = self.nodes.request(NAMES[user % 3], "PUT", f"/v1/items/{ITEM}/likes/{user}")
            except OSError as exc:
                self.failed.append((user, exc))
                continue
            if status == 200:
                self.acknowledged.add(user)
            else:
                self.failed.append((user, body))
            self.stop.wait(0.005)


def test_rotating_keys_under_writes_loses_nothing_and_locks_out_the_old_key(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path, NAMES)
    writer = Writer(nodes)
    try:
        nodes.start_all()
        writer.start()
        nodes.eventually(lambda: len(writer.acknowledged) > 20, "the writer is writing")
        assert likes_keys(nodes, "install", "--key-env", "LIKES_NEW_KEY").count("done ") == 3
        nodes.eventually(lambda: len(writer.acknowledged) > 60, "writes after install")
        assert likes_keys(nodes, "use", "--key-env", "LIKES_NEW_KEY").count("done ") == 3
        nodes.eventually(lambda: len(writer.acknowledged) > 100, "writes after use")
        assert likes_keys(nodes, "remove", "--key-id", key_id(OLD.encode()).hex()).count("done ") == 3
        nodes.eventually(lambda: len(writer.acknowledged) > 140, "writes after remove")
        writer.stop.set()
        writer.join(timeout=10)

        assert not writer.failed, writer.failed[:5]
        for name in NAMES:
            nodes.eventually(
                lambda n=name: nodes.likers(n, ITEM) == writer.acknowledged, f"every like on {name}"
            )
        nodes.eventually(
            lambda: len({nodes.call(n, "GET", "/v1/cluster")["fingerprint"] for n in NAMES}) == 1,
            "equal fingerprints",
        )
        assert [gossip(nodes, n)["frames_rejected_auth"] for n in NAMES] == [0, 0, 0]
        listing = likes_keys(nodes, "list", secret=NEW)
        assert listing.count(f"primary={key_id(NEW.encode()).hex()} keys={key_id(NEW.encode()).hex()}\n") == 3

        # n3 restarts with the cluster file's old key only: it must be shut out completely.
        nodes.kill("n3")
        nodes.start("n3")  # nodes.env still holds the old key
        before = sum(gossip(nodes, n)["frames_rejected_auth"] for n in ("n1", "n2"))
        nodes.call("n3", "PUT", "/v1/items/post/78/likes/1")
        nodes.call("n1", "PUT", "/v1/items/post/79/likes/1")
        nodes.eventually(
            lambda: (
                sum(gossip(nodes, n)["frames_rejected_auth"] for n in ("n1", "n2")) > before
                and gossip(nodes, "n3")["frames_rejected_auth"] > 0
            ),
            "both sides reject the other's frames",
        )
        nodes.eventually(
            lambda: all(
                m["state"] != "alive"
                for n in ("n1", "n2")
                for m in nodes.call(n, "GET", "/v1/cluster")["members"]
                if m["name"] == "n3"
            ),
            "n1 and n2 no longer count n3 as alive",
        )
        assert gossip(nodes, "n3")["frames_received"] == 0, "the stale node accepted a frame"
        assert nodes.call("n1", "GET", "/v1/items/post/78")["count"] == 0
        assert nodes.call("n3", "GET", "/v1/items/post/79")["count"] == 0

        # Given the new key, it rejoins and everything it and they wrote meets.
        nodes.kill("n3")
        nodes.env["LIKES_TEST_SECRET"] = NEW
        nodes.start("n3")
        for name in NAMES:
            nodes.eventually(
                lambda n=name: nodes.likers(n, ITEM) == writer.acknowledged, f"every like on {name}"
            )
            for item in ("post/78", "post/79"):
                nodes.eventually(
                    lambda n=name, i=item: nodes.call(n, "GET", f"/v1/items/{i}")["count"] == 1,
                    f"{item} on {name}",
                )
    finally:
        writer.stop.set()
        nodes.stop_all()
