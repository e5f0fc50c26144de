"""``GET /metrics``: the daemon in the Prometheus text format (DESIGN 14).

A custom collector on a private registry made for each scrape (nothing
global, nothing kept between scrapes): every value is read when scraped,
from what the proxy counted since start (``appkeys.ProxyStats``: requests,
refusals, tokens, cost, requests in flight, the usage writer's backlog) and
from the database (credentials, active sessions). Labels are configured
service names, status codes, refusal slugs and limit names, token kinds and
the version: never a token or its prefix, a secret, a credential's or
session's name, or anything a client typed.
"""

from __future__ import annotations

from aiohttp import web

from vaultd.api.auth import requires

routes = web.RouteTableDef()


@routes.get("/metrics", allow_head=False)
@requires("read")
async def metrics(request: web.Request) -> web.StreamResponse:
    # Imported here: see ``exposition``.
    from vaultd.api.exposition import CONTENT_TYPE, render

    return web.Response(body=render(request.app), headers={"Content-Type": CONTENT_TYPE})
