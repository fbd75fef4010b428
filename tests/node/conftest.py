"""Fixtures for the node tests: a single-node API app, with a real log and no gossip behind it."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from yarl import URL

from gossip.member import MemberInfo, MemberState
from node.config import ApiSettings
from node.durable.durability import Durability
from node.durable.itemstore import ItemStore
from node.durable.loading import StoreLoader
from node.durable.wal import WriteAheadLog
from node.http.api import METRICS, NodeDescription, create_app
from node.http.lane import LaneSite
from node.state.store import LikeStore

if TYPE_CHECKING:
    from tests.node.processes import NodeProcesses
from tests.node.checkpoint.conftest import redis_client  # noqa: F401  (a fixture for every node test)

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

#: Small limits, so the tests can reach every one of them cheaply.
TEST_LIMITS = ApiSettings(
    max_body_bytes=4096,
    max_batch_ops=5,
    max_count_items=5,
    default_page_limit=10,
    max_page_limit=50,
    max_counters_per_item=3,
    max_counter_delta=1000,
)


class SoloCluster:
    """A cluster of one: the node itself, alive, and no gossip counters."""

    def members(self) -> Iterable[MemberInfo]:
        return [MemberInfo("n1", ("127.0.0.1", 9001), MemberState.ALIVE, 0)]

    def stats(self) -> Mapping[str, object]:
        return {"frames_sent": 0}

    async def replicate(self, items: Sequence[tuple[bytes, bytes]], copies: int, timeout: float) -> int:
        return 0  # no peers: a cluster of one meets every write level by itself

    def deltas_ready(self) -> None:
        """Nobody to push deltas to."""


def make_app(data_dir: Path, settings: ApiSettings = TEST_LIMITS) -> web.Application:
    """A node app over a fresh store whose log lives in ``data_dir``."""
    node = NodeDescription(
        name="n1",
        actor="n1-0123456789abcdef",
        writer="n1-0123456789abcdef.1",
        url="http://127.0.0.1:8001",
        gossip_address="127.0.0.1:9001",
        pid=os.getpid(),
    )
    store = LikeStore(node.writer, max_counters_per_item=settings.max_counters_per_item)
    wal = WriteAheadLog(data_dir / "wal")
    items = ItemStore(wal.directory)
    wal.open(items.open())
    cluster = SoloCluster()
    durability = solo_durability(store, wal, items, cluster, write_timeout=settings.write_timeout_ms / 1000)
    return create_app(durability, settings, node, cluster)


def solo_durability(
    store: LikeStore,
    wal: WriteAheadLog,
    items: ItemStore,
    cluster: SoloCluster,
    *,
    write_timeout: float = 1.0,
    loader: StoreLoader | None = None,
) -> Durability:
    """The durability of a node alone, over an opened log and item store (``loader``: still being
    read in)."""
    return Durability(
        store,
        wal,
        items,
        cluster.replicate,
        cluster.deltas_ready,
        cluster_size=1,
        write_timeout=write_timeout,
        flush_bytes=64 * 1024 * 1024,
        loader=loader,
    )


class LaneTestServer(TestServer):
    """aiohttp's test server, its connections starting in the like lane as a node's do
    (``node.http.lane``): likes are answered by the lane, everything else by the app's routes."""

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(handler_cancellation=True, **kwargs)
        await self.runner.setup()
        assert isinstance(self.runner, web.AppRunner)
        self.site = LaneSite(self.runner, "127.0.0.1", 0)
        await self.site.start()
        self.host, self.port, self.scheme = "127.0.0.1", self.site.port, "http"
        self._root = URL(f"http://127.0.0.1:{self.port}")


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's ``aiohttp_client``, serving an application the way a node does: through the
    like lane (so every API test of a like runs through it, and every other request is handed over)."""

    async def serve(app: web.Application | BaseTestServer, **kwargs: Any) -> Client:
        if isinstance(app, web.Application):
            app = LaneTestServer(app)
        client: Client = await aiohttp_client(app, **kwargs)
        return client

    return serve


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> AsyncIterator[Client]:
    """A test client of a fresh node; the test fails if any request was answered 500."""
    app = make_app(tmp_path)
    yield await aiohttp_client(app)
    assert app[METRICS].internal_error_count() == 0, "a request was answered 500"


def fill_log_disk(log_directory: Path) -> None:
    """From now on every write to the log's live segment fails with ENOSPC, as on a full disk: the
    segment's descriptor becomes Linux's ``/dev/full``. A probe's new segment is a real file again."""
    assert os.path.exists("/dev/full"), "these tests need Linux's /dev/full (a device every write fails)"
    (segment,) = sorted(log_directory.glob("wal-*.log"))[-1:]
    descriptors = [
        int(name) for name in os.listdir("/proc/self/fd") if _points_at(f"/proc/self/fd/{name}", segment)
    ]
    assert descriptors, f"{segment} is not open in this process"
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        for descriptor in descriptors:
            os.dup2(full, descriptor)
    finally:
        os.close(full)


def _points_at(link: str, path: Path) -> bool:
    try:
        return os.readlink(link) == str(path)
    except OSError:  # closed meanwhile (the listing's own descriptor, say)
        return False


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (held open together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeProcesses]:
    """n1, n2, n3 as separate ``likes node`` processes, none started; every one stopped afterwards."""
    from tests.node.processes import NodeProcesses

    cluster = NodeProcesses(tmp_path, ("n1", "n2", "n3"))
    try:
        yield cluster
    finally:
        cluster.stop_all()
