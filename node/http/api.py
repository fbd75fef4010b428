"""The HTTP API (README, "HTTP API"), as a table of routes over one ``LikeStore``.

Every handler validates the whole request (``node.http.inputs``) before touching the store, and the store
calls are synchronous, so a rejected request changes nothing and an accepted one is applied without
interleaving. Every error is ``{"error": {"code", "message"}}``; the ``json_errors`` middleware turns
the framework's own 404/405/413 into that shape too, and turns any unexpected exception into a JSON
500 that is logged and counted (tests assert the count stays zero).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson
from aiohttp import web

from gossip import MemberInfo
from node.checkpoint.checkpointer import Checkpointer, LaneStatus
from node.config import ApiSettings
from node.durable.durability import Durability
from node.errors import (
    INTERNAL_MESSAGE,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    error_body,
)
from node.http import causal, dashboard, inputs
from node.http.limits import ApiGuard
from node.http.live import add_live_routes
from node.http.openapi import document as openapi_document
from node.http.page import add_page_routes
from node.http.writes import WRITES, Writes
from node.metrics import CONTENT_TYPE, NodeMetrics
from node.state.item import ItemKey
from node.state.store import LikeResult, LikeStore

log = logging.getLogger(__name__)


class ClusterView(Protocol):
    """What the API shows of gossip: the members as this node sees them, and counters."""

    def members(self) -> Iterable[MemberInfo]:
        """Every member known, this node included."""
        ...

    def stats(self) -> Mapping[str, object]:
        """Gossip counters (frames, merges, rejections...)."""
        ...


@dataclass(frozen=True)
class NodeDescription:
    """Who answers: shown at ``GET /v1/cluster`` and ``/healthz``."""

    name: str
    actor: str
    writer: str
    url: str
    gossip_address: str
    #: The process id, so an operator (or a test) can signal exactly this node.
    pid: int


STORE = web.AppKey("store", LikeStore)
SETTINGS = web.AppKey("api_settings", ApiSettings)
NODE = web.AppKey("node", NodeDescription)
CLUSTER = web.AppKey("cluster", ClusterView)
METRICS = web.AppKey("metrics", NodeMetrics)
DURABILITY = web.AppKey("durability", Durability)
#: Set by the server when sinks are configured; ``/v1/cluster`` then shows their lag.
CHECKPOINTER = web.AppKey("checkpointer", Checkpointer)

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    durability: Durability,
    settings: ApiSettings,
    node: NodeDescription,
    cluster: ClusterView,
    *,
    api_tokens: Sequence[str] = (),
    member_urls: Mapping[str, str] | None = None,
) -> web.Application:
    """The API over ``durability``'s store, its log running with the app; the caller adds gossip.
    With ``api_tokens``, writes and admin routes need one of them as a bearer token. ``member_urls``
    (name -> HTTP URL of every node) is what the dashboard gathers; without it, this node alone."""
    store = durability.store
    metrics = NodeMetrics()
    metrics.watch_items(lambda: len(store))
    metrics.watch_likes(lambda: store.likes)
    metrics.watch_gossip(cluster.stats)
    metrics.watch_members(cluster.members)
    metrics.watch_log(durability.wal, durability.items, lambda: len(store.unflushed), durability.loader)
    middlewares = [json_errors, guard, causal.middleware]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[STORE] = store
    app[DURABILITY] = durability
    app[SETTINGS] = settings
    app[NODE] = node
    app[CLUSTER] = cluster
    app[METRICS] = metrics
    limits = ApiGuard(
        client_rate=settings.client_rate,
        client_burst=settings.client_burst,
        user_rate=settings.user_rate,
        user_burst=settings.user_burst,
        max_keys=settings.rate_limit_keys,
        tokens=api_tokens,
    )
    app[WRITES] = Writes(limits, metrics, durability)  # the rate limits and API tokens live there
    causal.install(app, store, settings.causal_wait_ms / 1000, cluster)
    app.add_routes(routes)
    add_page_routes(app)
    add_live_routes(app, store, node.name)
    metrics.watch_checkpoints(lambda: _lanes(app))
    members = member_urls or {node.name: node.url}
    dashboard.install(app, node.name, partial(cluster_status_aside, app), members)
    app.cleanup_ctx.append(_durability)
    return app


async def _durability(app: web.Application) -> AsyncIterator[None]:
    """The log commits while the application runs and closes, with a final snapshot, at the end
    (after whatever the caller appended to ``cleanup_ctx``, gossip, has stopped)."""
    durability = app[DURABILITY]
    durability.start()
    yield
    await durability.close()


# -- responses and errors --------------------------------------------------------------------------


def reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_reply(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The one error shape."""
    body = error_body(code, message)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


#: Codes for the errors the framework raises itself, the same as ours for the same status.
_HTTP_CODES = {
    error.status: error.code
    for error in (MalformedRequest, NotFound, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType)
}
#: Methods counted under their own name in metrics; any other is "other", so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the JSON error shape; unexpected exceptions become a counted 500."""
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except RequestError as exc:
        response = error_reply(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_reply(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        metrics.internal_errors.inc()
        response = error_reply(500, "internal", INTERNAL_MESSAGE)
    route = request.match_info.route.resource
    label = route.canonical if route is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    metrics.count_request(method, label, response.status, time.perf_counter() - started)
    return response


#: Methods that change something; each needs a token when tokens are set (except the POSTs below).
_WRITES = frozenset({"PUT", "POST", "DELETE", "PATCH"})
#: POST routes that only read.
_READ_POSTS = frozenset({"/v1/counts", "/v1/users/{user}/liked"})


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before any handler: the client's rate limit, then the bearer token of writes and admin routes.

    The client is charged first, so guessing tokens costs requests like anything else."""
    app_guard = request.app[WRITES].guard
    authorization = request.headers.get("Authorization") if app_guard.tokens_required else None
    token = app_guard.authenticate(authorization)
    app_guard.limit_client(token, request.remote)
    if app_guard.tokens_required and token is None and _needs_token(request):
        app_guard.require_token(authorization, token)
    return await handler(request)


def _needs_token(request: web.Request) -> bool:
    """Writes and admin routes; an unknown route or method is left to its 404 or 405."""
    info = request.match_info
    if info.http_exception is not None:
        return False
    resource = info.route.resource
    path = resource.canonical if resource is not None else ""
    return path.startswith("/v1/keyring") or (request.method in _WRITES and path not in _READ_POSTS)


async def read_json(request: web.Request) -> object:
    """The request's JSON body: 413 if too large, 415 if not JSON, 400 if malformed, including a key
    repeated within one object (parsers disagree on which copy wins, so we accept neither)."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    charset = request.charset
    if request.content_type != "application/json" or (charset is not None and charset.lower() != "utf-8"):
        raise UnsupportedMediaType("send the body as application/json (UTF-8)")
    body = await request.read()  # aiohttp raises 413 past client_max_size, for chunked bodies too
    try:
        value = orjson.loads(body)  # strict: no NaN, no trailing data, no BOM, no lone surrogates
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    if _may_repeat_a_key(body, value):
        _reject_repeated_keys(body)
    return value


def _may_repeat_a_key(body: bytes, value: object) -> bool:
    """False when no object of ``body`` can repeat a key, checked in C at a fraction of parsing.

    Without a backslash, every string of ``body`` comes back byte for byte from ``orjson.dumps``,
    so both hold the same colons inside strings; every other colon ends a key. A repeated key is
    one ``value`` dropped, so ``body`` would hold more colons than its re-encoding."""
    colons = body.count(b":")
    return colons != 0 and (b"\\" in body or orjson.dumps(value).count(b":") != colons)


def _reject_repeated_keys(body: bytes) -> None:
    """The exact (slower) check, for the rare body the quick one cannot clear."""

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        found = dict(pairs)
        if len(found) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise MalformedRequest(f"the body repeats the key {key[:40]!r} within one object")
                seen.add(key)
        return found

    try:
        json.loads(body, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:  # orjson accepted it; stdlib limits differ slightly
        raise MalformedRequest(f"the body is not valid JSON: {str(exc)[:80]}") from None


def item_of(request: web.Request) -> ItemKey:
    """The item named by the path."""
    info = request.match_info
    return ItemKey(inputs.content_type(info["type"]), inputs.uint64(info["id"], "id"))


def _like_reply(liked: bool, result: LikeResult) -> dict[str, Any]:
    return {"liked": liked, "changed": result.changed, "count": result.count}


# -- likes -----------------------------------------------------------------------------------------


@routes.put("/v1/items/{type}/{id}/likes/{user}")
async def like(request: web.Request) -> web.Response:
    """Like: idempotent, ``changed`` tells whether this call made the difference."""
    return await _set_like(request, liking=True)


@routes.delete("/v1/items/{type}/{id}/likes/{user}")
async def unlike(request: web.Request) -> web.Response:
    """Unlike: idempotent."""
    return await _set_like(request, liking=False)


async def _set_like(request: web.Request, *, liking: bool) -> web.Response:
    """Validate everything, stage, then answer once the write level is met."""
    key, user = item_of(request), inputs.uint64(request.match_info["user"], "user")
    writes = request.app[WRITES]
    level = writes.level(request.query.get("w"))
    result, produced = writes.set_like(key, user, liking=liking)
    causal.note(request, produced)
    await writes.commit(level, (key,))
    return reply(_like_reply(liking, result))


@routes.get("/v1/items/{type}/{id}/likes/{user}")
async def liked(request: web.Request) -> web.Response:
    """Whether the user likes the item."""
    key, user = item_of(request), inputs.uint64(request.match_info["user"], "user")
    return reply({"liked": request.app[STORE].liked(key, user)})


@routes.get("/v1/items/{type}/{id}")
async def item(request: web.Request) -> web.Response:
    """The item's like count and named counters."""
    key, store = item_of(request), request.app[STORE]
    count, counters = store.count(key), store.counters(key)
    return reply({"type": key.content_type, "id": key.content_id, "count": count, "counters": counters})


@routes.get("/v1/items/{type}/{id}/likes")
async def likers(request: web.Request) -> web.Response:
    """The item's likers in ascending user id, a page at a time; ``next`` is the ``after`` to pass."""
    key, settings, store = item_of(request), request.app[SETTINGS], request.app[STORE]
    limit = inputs.page_limit(request.query, settings.default_page_limit, settings.max_page_limit)
    users, more = store.likers(key, after=inputs.user_cursor(request.query), limit=limit)
    return reply(
        {
            "type": key.content_type,
            "id": key.content_id,
            "count": store.count(key),
            "likers": users,
            "next": str(users[-1]) if more else None,
        }
    )


@routes.get("/v1/users/{user}/likes")
async def user_likes(request: web.Request) -> web.Response:
    """The items a user likes in (type, id) order, a page at a time; ``next`` is ``type:id``."""
    user, settings = inputs.uint64(request.match_info["user"], "user"), request.app[SETTINGS]
    limit = inputs.page_limit(request.query, settings.default_page_limit, settings.max_page_limit)
    loader = request.app[DURABILITY].loader
    if loader is not None:
        loader.check_listing()
    keys, more = request.app[STORE].liked_items(user, after=inputs.item_cursor(request.query), limit=limit)
    return reply(
        {
            "user": user,
            "items": [{"type": k.content_type, "id": k.content_id} for k in keys],
            "next": str(keys[-1]) if more else None,
        }
    )


@routes.post("/v1/items/{type}/{id}/counters/{name}")
async def add_to_counter(request: web.Request) -> web.Response:
    """Add ``delta`` (negative subtracts) to a named counter of the item."""
    key, name = item_of(request), inputs.counter_name(request.match_info["name"])
    settings = request.app[SETTINGS]
    delta = inputs.counter_delta(await read_json(request), settings.max_counter_delta)
    writes = request.app[WRITES]
    level = writes.level(request.query.get("w"))
    value = writes.add_to_counter(key, name, delta)
    causal.note(request)  # no dots: the answer carries the token it was sent
    await writes.commit(level, (key,))
    return reply({"value": value})


@routes.post("/v1/counts")
async def counts(request: web.Request) -> web.Response:
    """Like counts of many items in one round trip, in the order asked."""
    keys = inputs.count_request(await read_json(request), request.app[SETTINGS].max_count_items)
    store = request.app[STORE]
    return reply({"counts": [store.count(key) for key in keys]})


@routes.post("/v1/users/{user}/liked")
async def liked_many(request: web.Request) -> web.Response:
    """Whether the user likes each of many items, in the order asked: a feed asks it of every post it
    shows at once, in one round trip."""
    user = inputs.uint64(request.match_info["user"], "user")
    keys = inputs.count_request(await read_json(request), request.app[SETTINGS].max_count_items)
    store = request.app[STORE]
    return reply({"user": user, "liked": [store.liked(key, user) for key in keys]})


@routes.post("/v1/batch")
async def batch(request: web.Request) -> web.Response:
    """Many likes and unlikes: all validated first, then applied in order; one result per op."""
    ops = inputs.batch_request(await read_json(request), request.app[SETTINGS].max_batch_ops)
    writes = request.app[WRITES]
    level = writes.level(request.query.get("w"))
    liking = ops.liking
    changed, counts, produced = writes.apply_batch(ops.keys, ops.users, liking)
    causal.note(request, produced)  # a batch's answer carries a token, even if no op produced dots
    touched = ops.item_keys() if level.peers else ()  # only a write level above 1 needs them
    await writes.commit(level, touched)  # one record, one fsync
    results = [
        {"liked": like, "changed": change, "count": count}
        for like, change, count in zip(liking, changed, counts, strict=True)
    ]
    return reply({"results": results})


# -- the node itself -------------------------------------------------------------------------------


@routes.get("/v1/cluster")
async def cluster(request: web.Request) -> web.Response:
    """This node, the members it sees, and a fingerprint of its state to compare across nodes."""
    return reply(await cluster_status_aside(request.app))


async def cluster_status_aside(app: web.Application) -> dict[str, Any]:
    """``cluster_status``, once the store's fingerprint has caught up in slices between requests: a
    load of a million new items would otherwise hold the event loop for seconds here."""
    await app[STORE].fingerprint_aside()
    return cluster_status(app)


def cluster_status(app: web.Application) -> dict[str, Any]:
    """What ``GET /v1/cluster`` answers (the dashboard reads its own node's without HTTP)."""
    node, store, view = app[NODE], app[STORE], app[CLUSTER]
    members = sorted(view.members(), key=lambda m: m.name)
    return {
        "node": {
            "name": node.name,
            "actor": node.actor,
            "writer": node.writer,
            "url": node.url,
            "gossip": node.gossip_address,
            "pid": node.pid,
        },
        "members": [
            {
                "name": m.name,
                "address": f"{m.address[0]}:{m.address[1]}",
                "state": str(m.state),
                "incarnation": m.incarnation,
            }
            for m in members
        ],
        "items": len(store),
        "likes": store.likes,
        "fingerprint": store.fingerprint(),
        "gossip": {k: v for k, v in view.stats().items() if isinstance(v, int | float | str | bool)},
        "wal": _wal_status(app[DURABILITY]),
        "checkpoint": _checkpoint_status(app),
        "writes": {kind: app[METRICS].writes.get(kind, 0) for kind in ("like", "unlike", "counter")},
    }


def _wal_status(durability: Durability) -> dict[str, Any]:
    wal = durability.wal
    return {
        "fsync": wal.fsync,
        "records": wal.records,
        "fsyncs": wal.fsyncs,
        "bytes_written": wal.bytes_written,
        "fsync_p50_ms": _median_ms(wal.fsync_seconds),
        "group_commit_p50_ms": _median_ms(wal.commit_seconds),
        "item_store": {
            "loaded_items": None if durability.loader is None else durability.loader.loaded,
            "loading": durability.loader is not None and not durability.loader.done,
            "failure": None if durability.loader is None else durability.loader.failure,
            "flushes": durability.items.flushes,
            "items_written": durability.items.items_written,
            "unflushed_items": len(durability.store.unflushed),
            "covered_segment": durability.items.covered,
        },
        # Why the log refuses writes now (None while it takes them), since when (Unix seconds), and
        # how often it failed and recovered since start: a flapping disk shows in the counts.
        "failure": wal.failure,
        "failed_since": None if wal.failed_since is None else round(wal.failed_since, 3),
        "failures": wal.failures,
        "recoveries": wal.recoveries,
    }


def _median_ms(seconds: list[float]) -> float | None:
    recent = sorted(seconds)
    return round(recent[len(recent) // 2] * 1000, 3) if recent else None


def _lanes(app: web.Application) -> Mapping[str, LaneStatus]:
    """Each checkpoint sink's status; none until the server sets a checkpointer."""
    checkpointer = app.get(CHECKPOINTER)
    return {} if checkpointer is None else checkpointer.status()


def _checkpoint_status(app: web.Application) -> dict[str, Any]:
    checkpointer = app.get(CHECKPOINTER)
    if checkpointer is None:
        return {}
    return {name: dataclasses.asdict(status) for name, status in checkpointer.status().items()}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers, so it serves reads. Only its failure warrants a restart: a node
    whose log refuses writes still answers 200 here (``/readyz`` says so instead)."""
    return reply({"status": "ok", "node": request.app[NODE].name})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while the node takes writes, else 503 ``not_ready`` naming why, so a load
    balancer sends its traffic elsewhere until the node recovers by itself (a restart would not help)."""
    reasons = not_ready_reasons(request.app[DURABILITY])
    if reasons:
        return error_reply(503, "not_ready", "; ".join(reasons))
    return reply({"ready": True, "node": request.app[NODE].name})


def not_ready_reasons(durability: Durability) -> list[str]:
    """Why the node should get no traffic now; empty when it is ready: a log that refuses writes, and
    an item store still being read in (or found damaged while it was)."""
    loader = durability.loader
    loading = None if loader is None else loader.not_ready()
    if durability.writable:
        return [] if loading is None else [loading]
    if loading is not None and loader is not None and loader.failure is not None:
        return [loading]  # the reason writes are refused
    wal = durability.wal
    since = "" if wal.failed_since is None else f" since {_utc(wal.failed_since)}"
    return [f"no writes taken{since}: {wal.failure or 'the log recovered; a new writer id is being claimed'}"]


def _utc(seconds: float) -> str:
    """Unix time as the logs write it (``2026-01-31T12:00:00Z``), to match a reason with its log line."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of every route (``node.http.openapi``), for clients and schemathesis."""
    return web.Response(body=_OPENAPI, content_type="application/json")


_OPENAPI = orjson.dumps(openapi_document())


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text."""
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
