"""One node process: the store, its log, the HTTP API and gossip over TCP, wired together and run.

Start-up order: lock the data directory, open the item store and the log after the segment it
covers, claim an identity, read the item store's first items and replay the log's tail into the
store, and only then serve (the rest of a big item store is read in while serving). The log's
committer and gossip start in the application's ``cleanup_ctx``, so both are up before the HTTP site
accepts its first request; at shutdown gossip stops first (last deltas flushed, peers told) and the
log last (a final flush of the items changed since the last one). The event loop is
uvloop's when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gossip import GossipConfig, Gossiper, Peer
from gossip.member import MemberState
from gossip.tcp import Route, TcpTransport
from node.checkpoint import CheckpointSink, MysqlSink, RedisSink, SqliteSink
from node.checkpoint.checkpointer import Checkpointer
from node.config import ClusterConfig, NodeSpec, load_config
from node.durable.datadir import NodeDataDir, NodeIdentity
from node.durable.durability import Durability
from node.durable.itemstore import DamagedStore, ItemStore
from node.durable.loading import AT_START, StoreLoader
from node.durable.wal import DISCARD_FLAG, Recovery, WriteAheadLog
from node.errors import ConfigError, DataDirError, StartupError, Unavailable
from node.http.api import CHECKPOINTER, NodeDescription, create_app
from node.http.keyring_api import add_keyring_routes
from node.http.lane import LaneSite
from node.process.heap import one_arena, trim_periodically
from node.process.logs import configure_logging
from node.state.store import LikeStore

log = logging.getLogger(__name__)

GOSSIPER = web.AppKey("gossiper", Gossiper)
#: Members that count for checkpoint ownership: a suspect may still be writing.
LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
#: The pid whose death should end this node (``likes up`` passes its own), or None.
PARENT_PID = web.AppKey("parent_pid", int)
#: How often a child of ``likes up`` checks that its parent is still there, in seconds.
PARENT_CHECK_INTERVAL = 1.0
#: Allocations (net of frees) between two young-generation collections; CPython's default is 700.
GC_YOUNG_THRESHOLD = 10_000
#: How often the like lane's idle connections are looked for, in seconds.
IDLE_SWEEP_INTERVAL = 10.0


def gossip_config(config: ClusterConfig, spec: NodeSpec, keys: bytes | tuple[bytes, ...]) -> GossipConfig:
    """The cluster file's gossip settings for node ``spec`` with ``keys`` (one key, or the ring): every
    other node is a seed."""
    seeds = tuple(Peer(n.name, n.host, n.gossip_port) for n in config.nodes if n.name != spec.name)
    try:
        return GossipConfig.from_settings(
            config.gossip,
            spec.name,
            host=spec.host,
            port=spec.gossip_port,
            seeds=seeds,
            keyring=(keys,) if isinstance(keys, bytes) else keys,
        )
    except ValueError as exc:  # gossip's own checks; config.py should have caught these first
        raise ConfigError(f"gossip: {exc}") from exc


def open_store(
    config: ClusterConfig,
    writer: str,
    items: ItemStore,
    recovery: Recovery,
    *,
    discard_damaged: bool = False,
    new_actor: Callable[[], str] | None = None,
    at_start: int = AT_START,
) -> tuple[LikeStore, StoreLoader]:
    """A store holding the first ``at_start`` items of the item store, then everything the log holds
    after it (``WriteAheadLog.open``), and the loader that reads the rest in while the node serves
    (``node.durable.loading``). A state in the item store that fails its checksum stops the start
    (DataDirError naming the flag), or with ``discard_damaged`` is dropped and reported in
    ``recovery``; ``new_actor`` claims a new actor id when that happens later."""
    store = LikeStore(
        writer,
        max_counters_per_item=config.api.max_counters_per_item,
        max_payload_bytes=config.gossip.max_frame_bytes,
    )
    for damage in recovery.damage:
        log.warning("write-ahead log damaged: %s", damage)
    loader = StoreLoader(store, items, discard_damaged=discard_damaged, new_actor=new_actor)
    try:
        loader.read(at_start)
        # A delta of the log's tail joins its item's stored state, read first if not read yet.
        unreadable = store.restore(recovery.snapshot) + store.restore(recovery.deltas)
    except DamagedStore as exc:
        raise _refusal(exc) from None
    except Unavailable as exc:  # a stored state the log's tail needed is damaged
        raise DataDirError(f"{items.path}: {exc}") from None
    if items.damaged:
        line = f"{items.path.name}: {len(items.damaged)} damaged item states discarded"
        items.drop_damaged()
        log.warning("item store damaged: %s", line)
        recovery.damage.append(line)
        recovery.snapshot_discarded = True
    if unreadable:
        log.warning("%d unreadable entries skipped in restoring; anti-entropy repairs them", unreadable)
    log.info(
        "restored %d items: %d from the item store%s, then %d log records",
        len(store),
        loader.loaded,
        "" if loader.done else " (the rest is read in while serving)",
        recovery.records,
    )
    return store, loader


def open_item_store(items: ItemStore, *, discard_damaged: bool) -> str | None:
    """Open the item store; a damaged one is set aside (its data then comes from peers) only with
    the operator's leave, as a damaged snapshot is. What was set aside, for the log, or None."""
    try:
        items.open()
    except DamagedStore as exc:
        if not discard_damaged:
            raise _refusal(exc) from None
        aside = items.set_aside()
        items.open()
        return f"{exc}; discarded, kept aside as {aside}"
    return None


def _refusal(exc: DamagedStore) -> DataDirError:
    return DataDirError(
        f"{exc}. To start the node without what is damaged (a damaged file is set aside, not deleted; "
        f"peers send its data back by anti-entropy, a node alone loses it), pass {DISCARD_FLAG} to "
        "`likes node` or `likes up`"
    )


def resumes_writer(recovery: Recovery, wal: WriteAheadLog, covered: int) -> bool:
    """Whether this start may write under the last run's writer id: only when the item store (which
    holds the log up to segment ``covered``) and the log were read whole, hold something, and were
    fsynced (see ``node.durable.datadir``)."""
    holds = covered > 0 or bool(recovery.snapshot) or recovery.records > 0
    return recovery.clean and holds and wal.fsync == "always"


def build_node_app(
    config: ClusterConfig,
    name: str,
    store: LikeStore,
    wal: WriteAheadLog,
    loader: StoreLoader,
    identity: NodeIdentity,
    keys: tuple[bytes, ...],
    *,
    parent_pid: int | None = None,
    new_writer: Callable[[], str] | None = None,
    gossip_route: Route | None = None,
) -> web.Application:
    """The application of node ``name``, with its log and gossip attached to its lifecycle;
    ``new_writer`` claims a writer id for a log that failed and takes writes again; ``gossip_route``
    decides where each gossip frame goes (``gossip.tcp.Route``; a fault harness's, else None)."""
    spec = config.node(name)
    member = gossip_config(config, spec, keys)
    transport = TcpTransport(
        member.host, member.port, max_frame_bytes=member.max_frame_bytes, route=gossip_route
    )
    gossiper = Gossiper(member, store, transport)
    durability = Durability(
        store,
        wal,
        loader.items,
        gossiper.replicate,
        gossiper.deltas_ready,
        cluster_size=len(config.nodes),
        write_timeout=config.api.write_timeout_ms / 1000,
        flush_bytes=config.storage.flush_bytes,
        flush_items=config.storage.flush_items,
        new_writer=new_writer,
        loader=loader,
    )
    description = NodeDescription(
        name=spec.name,
        actor=identity.actor,
        writer=identity.writer,
        url=spec.url,
        gossip_address=f"{spec.host}:{spec.gossip_port}",
        pid=os.getpid(),
    )
    app = create_app(
        durability,
        config.api,
        description,
        gossiper,
        api_tokens=config.security.resolve_api_tokens(),
        member_urls={n.name: n.url for n in config.nodes},
    )
    add_keyring_routes(app, gossiper.keyring)
    app[GOSSIPER] = gossiper
    app.cleanup_ctx.append(_gossip)
    app[CHECKPOINTER] = Checkpointer(
        store,
        checkpoint_sinks(config, name),
        me=spec.name,
        live_members=lambda: (m.name for m in gossiper.members() if m.state in LIVE),
        interval=config.checkpoint.interval_ms / 1000,
        batch_items=config.checkpoint.batch_items,
        max_backoff=config.checkpoint.max_backoff_ms / 1000,
    )
    app.cleanup_ctx.append(_checkpoints)
    app.cleanup_ctx.append(_trim_heap)
    if parent_pid is not None:
        app[PARENT_PID] = parent_pid
        app.cleanup_ctx.append(_exit_with_parent)
    return app


def checkpoint_sinks(config: ClusterConfig, name: str) -> list[CheckpointSink]:
    """The configured sinks of node ``name``."""
    settings = config.checkpoint.with_environment()
    timeout = settings.timeout_ms / 1000
    sinks: list[CheckpointSink] = []
    if settings.sqlite:
        sinks.append(SqliteSink(config.node_dir(name) / "checkpoint.sqlite", timeout=timeout))
    if settings.redis_url is not None:
        sinks.append(RedisSink(settings.redis_url, prefix=settings.redis_prefix, timeout=timeout))
    if settings.mysql_url is not None:
        sinks.append(MysqlSink(settings.mysql_url, timeout=timeout))
    return sinks


async def _checkpoints(app: web.Application) -> AsyncIterator[None]:
    """Checkpoints run once gossip knows the members, and stop before it does."""
    checkpointer = app[CHECKPOINTER]
    checkpointer.start()
    yield
    await checkpointer.close()


async def _gossip(app: web.Application) -> AsyncIterator[None]:
    """Gossip runs exactly while the application does."""
    gossiper = app[GOSSIPER]
    await gossiper.start()
    yield
    await gossiper.stop()


async def _trim_heap(app: web.Application) -> AsyncIterator[None]:
    """Freed memory goes back to the OS every few seconds (``node.process.heap``)."""
    task = asyncio.create_task(trim_periodically(), name="heap trim")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _exit_with_parent(app: web.Application) -> AsyncIterator[None]:
    """Stop this node if the ``likes up`` that started it disappears, even by ``kill -9``."""
    parent = app[PARENT_PID]

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
        log.warning("parent process %d is gone; stopping", parent)
        os.kill(os.getpid(), 15)  # SIGTERM: run_app's handler shuts down cleanly

    task = asyncio.create_task(watch(), name="parent watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_node(
    config_path: Path,
    name: str,
    *,
    parent_pid: int | None = None,
    log_format: str = "auto",
    log_level: str = "info",
    discard_damaged: bool = False,
    gossip_route: Route | None = None,
    mark_durable: bool = False,
) -> None:
    """Run node ``name`` of the cluster file in the foreground until SIGINT or SIGTERM, logging in
    ``log_format`` from ``log_level`` up (``node.process.logs``); ``discard_damaged`` is the
    operator's leave to start without what is damaged in the item store or a previous version's
    snapshot (``open_item_store``, ``open_store``, ``WriteAheadLog.open``).

    Two seams for tests, which production never uses and no setting or variable turns on (a test
    starts the node through ``bench.testnode``): ``gossip_route`` cuts and detours gossip frames
    (``gossip.faults``), and ``mark_durable`` has the log record its last fsynced offset after every
    fsync, so a test can cut the log there as a power loss would (``WriteAheadLog``)."""
    config = load_config(config_path)
    spec = config.node(name)
    keys = config.security.resolve_keys()
    configure_logging(name, log_format, level=log_level)
    one_arena()  # before the log's and the checkpoint's threads (node.process.heap)
    with NodeDataDir(config.storage.data_dir, spec.name) as data_dir:
        wal = WriteAheadLog(
            data_dir.path / "wal",
            fsync="never" if config.storage.fsync == "never" else "always",
            mark_durable=mark_durable,
        )
        items = ItemStore(wal.directory)
        discarded = open_item_store(items, discard_damaged=discard_damaged)
        recovery = wal.open(items.covered, discard_damaged_snapshot=discard_damaged)
        if discarded is not None:
            recovery.damage.append(discarded)
            recovery.snapshot_discarded = True
        fresh_actor = recovery.snapshot_discarded
        identity = data_dir.claim_identity(
            resume=resumes_writer(recovery, wal, items.covered), new_actor=fresh_actor
        )
        log.info("node %s starting as %s (writer %s)", name, identity.actor, identity.writer)
        store, loader = open_store(
            config,
            identity.writer,
            items,
            recovery,
            discard_damaged=discard_damaged,
            new_actor=lambda: data_dir.claim_identity(new_actor=True).writer,
            at_start=config.storage.read_at_start,
        )
        if recovery.snapshot_discarded and not fresh_actor:  # dropped states may have held its dots
            identity = data_dir.claim_identity(new_actor=True)
            store.set_writer(identity.writer)
            log.info("node %s continues as %s (writer %s)", name, identity.actor, identity.writer)
        app = build_node_app(
            config,
            name,
            store,
            wal,
            loader,
            identity,
            keys,
            parent_pid=parent_pid,
            new_writer=lambda: data_dir.claim_identity().writer,
            gossip_route=gossip_route,
        )
        _tune_garbage_collector()
        try:
            serve(app, spec.host, spec.http_port, started=lambda: _log_started(spec, identity, len(store)))
        except OSError as exc:  # binding HTTP or gossip; everything started has been cleaned up
            raise StartupError(f"node {name} cannot start: {exc}") from exc
    log.info("node %s stopped", name, extra={"event": "node_stopped"})


def serve(app: web.Application, host: str, port: int, *, started: Callable[[], None]) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM, as ``web.run_app`` does, except that
    connections start in the like lane (``node.http.lane``); ``started`` is called once every socket is
    bound. Then: stop accepting, finish the answers in progress, run the app's clean-up."""
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, host, port, started))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, host: str, port: int, started: Callable[[], None]) -> None:
    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = LaneSite(runner, host, port)
        await site.start()
        started()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_SWEEP_INTERVAL)
            site.lane.close_idle(loop.time())
    finally:
        await runner.cleanup()


def _log_started(spec: NodeSpec, identity: NodeIdentity, items: int) -> None:
    """The one line of a start, once every socket is bound (``run_app`` calls it then, in place of
    its banner): a node that failed to bind never says it started."""
    log.info(
        "node %s started: %s, gossip %s:%d, %d items",
        spec.name,
        spec.url,
        spec.host,
        spec.gossip_port,
        items,
        extra={
            "event": "node_started",
            "url": spec.url,
            "gossip": f"{spec.host}:{spec.gossip_port}",
            "actor": identity.actor,
            "writer": identity.writer,
            "pid": os.getpid(),
            "items": items,
        },
    )


def _tune_garbage_collector() -> None:
    """Fewer, cheaper collections: what start-up built (the restored store, modules) is frozen out of
    every later collection, and young objects get a larger generation, so the per-request garbage of
    thousands of requests a second is rarely promoted into full collections that stall every request.
    Cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when available: it roughly halves the cost of each request and frame."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
