"""``GET /api/audit``: proxied requests, newest first (metadata, never secrets)."""

from __future__ import annotations

import re
import time

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.errors import ErrorList, FieldError, ValidationError
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import limit_param, query_params
from vaultd.models import UUID_RE, check_service_name
from vaultd.store.audit import MAX_LIMIT, list_entries
from vaultd.units import parse_duration

routes = web.RouteTableDef()
AUDIT_PARAMS = ("service", "credential_id", "since", "limit")
DEFAULT_LIMIT = 100
_INT = re.compile(r"[0-9]{1,12}")


def _since(text: str) -> int:
    """Unix seconds, or a duration back from now ("1h", "7d")."""
    if _INT.fullmatch(text):
        return int(text)
    try:
        return int(time.time()) - parse_duration(text)
    except ValueError:
        raise ValidationError(
            FieldError("/since", 'must be Unix seconds or a duration such as "1h" or "7d"')
        ) from None


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
    since = None
    if "since" in params:
        since = errors.check(_since, params["since"])
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
