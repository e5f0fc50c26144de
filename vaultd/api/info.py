"""Endpoints that describe the daemon: health, services, its config, the OpenAPI document."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from vaultd import __version__
from vaultd.api.auth import authenticate, requires
from vaultd.api.openapi import openapi_document
from vaultd.http.appkeys import LIVE_CONFIG, VAULT

routes = web.RouteTableDef()


@routes.get("/healthz", allow_head=False)
async def healthz(request: web.Request) -> web.StreamResponse:
    # No auth, so nothing that is not already public: no counts, no paths.
    return web.json_response({"status": "ok", "version": __version__})


@routes.get("/api/services", allow_head=False)
@requires("read")
async def list_services(request: web.Request) -> web.StreamResponse:
    counts = Counter(c.service for c in request.app[VAULT].credentials.list())
    return web.json_response(
        [s.to_json(counts[s.name]) for s in request.app[LIVE_CONFIG].config.services.values()]
    )


@routes.get("/api/daemon", allow_head=False)
async def daemon_info(request: web.Request) -> web.StreamResponse:
    """What the daemon runs with, for ``vaultd doctor`` and ``vaultd run``: any valid token.

    ``services`` names the daemon's services this token may use (all of them
    for ``read``), which a proxy-only token could learn anyway from the
    proxy's 404 for an unknown one: ``vaultd run`` asks with the token it
    hands its command, so that it can refuse a service the daemon does not
    have without giving the command any more than that. The config's digest,
    and the keys a reload could not apply, only for ``read``.
    """
    session = authenticate(request)
    live = request.app[LIVE_CONFIG]
    reader = session.has_scope("read")
    return web.json_response(
        {
            "version": __version__,
            "services": [n for n in live.config.services if reader or session.allows_service(n)],
            "config_digest": live.digest if reader else None,
            "pending_restart": list(live.pending_restart) if reader else None,
        }
    )


@routes.get("/api/openapi.json", allow_head=False)
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())
