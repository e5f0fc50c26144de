"""``/ui/``: the daemon's page (DESIGN 15), static files shipped in the package.

No token here: the page is the same for everyone and holds no data. It logs
in with the token ``vaultd ui`` puts in its URL's fragment (never sent to
any server) and asks the JSON API for everything it shows. The headers every
answer under ``/ui`` carries (CSP, Referrer-Policy) are set for all of them
in one place, errors included (``http.middleware.PAGE_HEADERS``).
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from vaultd.errors import NotFound
from vaultd.http.appkeys import LIVE_CONFIG

routes = web.RouteTableDef()

# The package directory of the page's files, and each file's Content-Type.
# Only these names are served: a name is a key in a table, never a path.
PAGE_DIR = "data/ui"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}


@functools.cache
def page_files() -> dict[str, bytes]:
    """Every file of the page by name, read once, at the first request for one."""
    folder = resources.files("vaultd").joinpath(PAGE_DIR)
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and _content_type(entry.name) is not None
    }


def _content_type(name: str) -> str | None:
    _, dot, extension = name.rpartition(".")
    return CONTENT_TYPES.get(f".{extension}") if dot else None


def _check_enabled(request: web.Request) -> None:
    # Read per request: a reload (SIGHUP) may turn the page off or on. Off,
    # it is the router's own 404: no sign that there is a page at all.
    if not request.app[LIVE_CONFIG].config.ui_enabled:
        raise NotFound("there is no endpoint at this path")


def _serve(request: web.Request, name: str) -> web.Response:
    _check_enabled(request)
    body = page_files().get(name)
    content_type = _content_type(name)
    if body is None or content_type is None:
        raise NotFound("the page has no such file")
    return web.Response(body=body, content_type=content_type, charset="utf-8")


@routes.get("/ui", allow_head=False)
async def page_redirect(request: web.Request) -> web.StreamResponse:
    _check_enabled(request)
    return web.Response(status=302, headers={"Location": "/ui/"})


@routes.get("/ui/", allow_head=False)
async def page(request: web.Request) -> web.StreamResponse:
    return _serve(request, INDEX)


@routes.get("/ui/{asset}", allow_head=False)
async def page_asset(request: web.Request) -> web.StreamResponse:
    return _serve(request, request.match_info["asset"])
