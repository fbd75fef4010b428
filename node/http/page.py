"""``GET /``: the like page people see, served by every node from files shipped with the package.

``node/http/web/like.html``, ``like.css`` and ``like.js`` are plain files (no build step, nothing fetched
from elsewhere), read once at import and served from memory. The page likes three demo posts through
the public API as a visitor with a random user id, queues likes made offline in ``localStorage``,
and follows the counts live through ``GET /v1/events`` (``node.http.live``).
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

#: The page's files, read from the installed package (``pyproject.toml`` ships ``node/http/web/*``).
_WEB = files("node.http") / "web"
LIKE_HTML = (_WEB / "like.html").read_bytes()
LIKE_JS = (_WEB / "like.js").read_bytes()
LIKE_CSS = (_WEB / "like.css").read_bytes()
#: Small files: a browser asks again each time, so a page and its script never come from two releases.
_CACHE = {"Cache-Control": "no-cache"}

routes = web.RouteTableDef()


@routes.get("/")
async def like_page(request: web.Request) -> web.Response:
    """The page with like buttons for the demo posts."""
    return web.Response(body=LIKE_HTML, content_type="text/html", charset="utf-8", headers=_CACHE)


@routes.get("/like.js")
async def like_script(request: web.Request) -> web.Response:
    """The page's script."""
    return web.Response(body=LIKE_JS, content_type="text/javascript", charset="utf-8", headers=_CACHE)


@routes.get("/like.css")
async def like_style(request: web.Request) -> web.Response:
    """The page's style sheet."""
    return web.Response(body=LIKE_CSS, content_type="text/css", charset="utf-8", headers=_CACHE)


def add_page_routes(app: web.Application) -> None:
    """Serve the like page and its two files from ``app``."""
    app.add_routes(routes)
