"""``GET /api/audit``: proxied requests, newest first (metadata, never secrets)."""

from __future__ import annotations

import re

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.errors import ErrorList, FieldError, ValidationError
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import limit_param, moment_param, query_params
from vaultd.models import UUID_RE, check_service_name, now
from vaultd.store.audit import MAX_LIMIT, list_entries

routes = web.RouteTableDef()
AUDIT_PARAMS = (
    "service",
    "credential_id",
    "session_id",
    "status",
    "refused",
    "since",
    "until",
    "limit",
)
DEFAULT_LIMIT = 100
# One status code (429), or a class of them (4xx).
_STATUS = re.compile(r"([1-5])([0-9]{2}|xx)")
_BOOLEANS = {"true": True, "false": False}


def status_range(text: str) -> tuple[int, int]:
    """``[low, high)`` of the ``status`` parameter: ``429`` or a class such as ``4xx``."""
    match = _STATUS.fullmatch(text)
    if match is None:
        raise ValidationError(FieldError("/status", "must be a status code such as 429, or 4xx"))
    if match.group(2) == "xx":
        low = int(match.group(1)) * 100
        return low, low + 100
    return int(text), int(text) + 1


@routes.get("/api/audit", allow_head=False)
@requires("read")
async def list_audit(request: web.Request) -> web.StreamResponse:
    params = query_params(request.query, AUDIT_PARAMS)
    errors = ErrorList()
    service = params.get("service")
    if service is not None:
        errors.check(check_service_name, service, "/service")
    for key in ("credential_id", "session_id"):
        value = params.get(key)
        if value is not None and not UUID_RE.fullmatch(value):
            errors.add(f"/{key}", f"must be a {key.removesuffix('_id')} id")
    status = params.get("status")
    status_between = None if status is None else errors.check(status_range, status)
    refused = params.get("refused")
    if refused is not None and refused not in _BOOLEANS:
        errors.add("/refused", "must be true or false")
    at = now()
    since = errors.check(moment_param, params, "since", at)
    until = errors.check(moment_param, params, "until", at)
    if since is not None and until is not None and until <= since:
        errors.add("/until", "must be later than since")
    limit = errors.check(limit_param, params, MAX_LIMIT)
    errors.raise_if_any()
    entries = list_entries(
        request.app[VAULT].db,
        service=service,
        credential_id=params.get("credential_id"),
        session_id=params.get("session_id"),
        status=status_between,
        refused=None if refused is None else _BOOLEANS[refused],
        since=since,
        until=until,
        limit=DEFAULT_LIMIT if limit is None else limit,
    )
    return web.json_response([e.to_json() for e in entries])
