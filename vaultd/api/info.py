"""Endpoints that describe the daemon: health, services, the OpenAPI document."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from vaultd import __version__
from vaultd.api.auth import requires
from vaultd.api.openapi import openapi_document
from vaultd.http.appkeys import CONFIG, VAULT

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
        [s.to_json(counts[s.name]) for s in request.app[CONFIG].services.values()]
    )


@routes.get("/api/openapi.json", allow_head=False)
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())
