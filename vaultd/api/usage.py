"""``GET /api/usage``: requests, tokens and cost from the audit log, grouped (DESIGN 10).

What counts and how is ``vaultd.store.usage``'s to say; this checks the query.
"""

from __future__ import annotations

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.errors import ErrorList
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import moment_param, query_params
from vaultd.models import now
from vaultd.store.usage import USAGE_BY, usage_groups

routes = web.RouteTableDef()
USAGE_PARAMS = ("by", "since", "until")
DEFAULT_BY = "day"


@routes.get("/api/usage", allow_head=False)
@requires("read")
async def list_usage(request: web.Request) -> web.StreamResponse:
    params = query_params(request.query, USAGE_PARAMS)
    errors = ErrorList()
    by = params.get("by", DEFAULT_BY)
    if by not in USAGE_BY:
        errors.add("/by", f"must be one of {', '.join(USAGE_BY)}")
    at = now()
    since = errors.check(moment_param, params, "since", at)
    until = errors.check(moment_param, params, "until", at)
    if since is not None and until is not None and until <= since:
        # An empty window is always a mistake (until is exclusive).
        errors.add("/until", "must be later than since")
    errors.raise_if_any()
    groups = usage_groups(request.app[VAULT].db, by=by, since=since, until=until)
    return web.json_response([g.to_json() for g in groups])
