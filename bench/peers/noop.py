"""Peer 1, the no-op: the like route of our node with nothing behind it.

It validates the path exactly as our node does (content type ``[a-z][a-z0-9_]{0,19}``, plain-decimal
unsigned 64-bit ids, 422 otherwise) and answers a constant ``{"liked": true, "changed": true,
"count": 1}``. What is left is the cost of one aiohttp process on uvloop parsing a request, matching
a route and writing a small orjson body: the ceiling of any Python HTTP like service, ours included.

The two other peers import the plumbing below (validation, reply, server start, command line) so
that all three differ from our node only in what they do per like, never in how they speak HTTP.

    python -m bench.peers.noop --port 8101
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

#: The route every system in the comparison serves; the same shape as our node's like.
LIKE_ROUTE = "/v1/items/{type}/{id}/likes/{user}"
#: Our node's rules for a content type and for an id (``node.state.item.NAME``, ``node.http.inputs.uint64``).
CONTENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,19}")
DECIMAL = re.compile(r"[0-9]{1,32}")
MAX_ID = (1 << 64) - 1
HOST = "127.0.0.1"

_CONSTANT = orjson.dumps({"liked": True, "changed": True, "count": 1})


class InvalidLike(ValueError):
    """A path value out of its domain: answered 422, as our node does."""


def uint64(text: str, where: str) -> int:
    """An unsigned 64-bit integer in plain ASCII decimal."""
    if not DECIMAL.fullmatch(text) or int(text) > MAX_ID:
        raise InvalidLike(f"{where}: {text[:40]!r} is not an unsigned 64-bit decimal integer")
    return int(text)


def parse_like(info: Mapping[str, str]) -> tuple[str, int, int]:
    """(content type, content id, user) from the matched path; ``InvalidLike`` if any is invalid."""
    content_type = info["type"]
    if not CONTENT_TYPE.fullmatch(content_type):
        raise InvalidLike(f"type: {content_type[:40]!r} is not a content type ([a-z][a-z0-9_]{{0,19}})")
    return content_type, uint64(info["id"], "id"), uint64(info["user"], "user")


def reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response, built the way our node builds its own."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_reply(status: int, code: str, message: str) -> web.Response:
    """Our node's error shape."""
    return reply({"error": {"code": code, "message": message}}, status)


def like_reply(changed: bool, count: int) -> web.Response:
    """The like answer of DESIGN.md."""
    return reply({"liked": True, "changed": changed, "count": count})


async def healthz(request: web.Request) -> web.Response:
    """Readiness, for the harness."""
    return reply({"status": "ok"})


async def like(request: web.Request) -> web.Response:
    """Validate, then answer a constant body."""
    try:
        parse_like(request.match_info)
    except InvalidLike as exc:
        return error_reply(422, "invalid", str(exc))
    return web.Response(body=_CONSTANT, content_type="application/json")


def create_app() -> web.Application:
    """The no-op application."""
    app = web.Application()
    app.router.add_put(LIKE_ROUTE, like)
    app.router.add_get("/healthz", healthz)
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop, as our node uses (``node.process.server``), so no system is flattered by its loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(app: web.Application, port: int, host: str = HOST) -> None:
    """Run ``app`` as our node runs its own: ``web.run_app`` on uvloop, no access log; SIGTERM stops."""
    web.run_app(
        app,
        host=host,
        port=port,
        loop=new_event_loop(),
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
    )


def parser(description: str | None) -> argparse.ArgumentParser:
    """The options every peer takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    return result


def main(
    argv: Sequence[str] | None = None,
    *,
    description: str | None = __doc__,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
    build: Callable[[argparse.Namespace], web.Application] = lambda args: create_app(),
) -> int:
    """Parse the command line, build the peer's application and serve it until SIGTERM or SIGINT."""
    options = parser(description)
    if extend is not None:
        extend(options)
    args = options.parse_args(argv)
    serve(build(args), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
