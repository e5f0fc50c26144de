"""``GET /api/audit``: proxied requests, newest first (metadata, never secrets)."""

from __future__ import annotations

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.errors import ErrorList
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import limit_param, moment_param, query_params
from vaultd.models import UUID_RE, check_service_name, now
from vaultd.store.audit import MAX_LIMIT, list_entries

routes = web.RouteTableDef()
AUDIT_PARAMS = ("service", "credential_id", "since", "limit")
DEFAULT_LIMIT = 100


@routes.get("/api/audit", allow_head=False)
@requires("read")
async def list_audit(request: web.Request) -> web.StreamResponse:
    params = query_params(request.query, AUDIT_PARAMS)
    errors = ErrorList()
    service = params.get("service")
    if service is not None:
        errors.check(check_service_name, service, "/service")
    credential_id = params.get("credential_id")
    if credential_id is not None and not UUID_RE.fullmatch(credential_id):
        errors.add("/credential_id", "must be a credential id")
    since = errors.check(moment_param, params, "since", now())
    limit = errors.check(limit_param, params, MAX_LIMIT)
    errors.raise_if_any()
    entries = list_entries(
        request.app[VAULT].db,
        service=service,
        credential_id=credential_id,
        since=since,
        limit=DEFAULT_LIMIT if limit is None else limit,
    )
    return web.json_response([e.to_json() for e in entries])
