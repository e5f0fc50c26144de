"""``/api/credentials``: metadata of stored keys, and the admin verbs that change them.

No handler here can return a secret: responses are built only from
``Credential.to_json()``, which has no field that could hold one.
"""

from __future__ import annotations

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.errors import ErrorList, NotFound
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import limit_param, query_params, read_object
from vaultd.models import UUID_RE, check_service_name, check_type

routes = web.RouteTableDef()

PAGE_MAX = 100
LIST_PARAMS = ("service", "type", "limit", "starting_after")
CREATE_FIELDS = ("service", "name", "secret", "type", "metadata", "expires_at")
PATCH_FIELDS = ("name", "metadata", "expires_at", "secret", "is_default", "limits")


def _credential_id(request: web.Request) -> str:
    value = request.match_info["id"]
    # Not echoed: a path segment is client text, and could be anything (a token).
    if not UUID_RE.fullmatch(value):
        raise NotFound("no credential with that id")
    return value


def _list_filters(params: dict[str, str]) -> tuple[int | None, str | None]:
    """``(limit, starting_after)`` checked, plus the filters checked in place."""
    errors = ErrorList()
    for key, check in (("service", check_service_name), ("type", check_type)):
        if key in params:
            errors.check(check, params[key], f"/{key}")
    limit = errors.check(limit_param, params, PAGE_MAX)
    cursor = params.get("starting_after")
    if cursor is not None and not UUID_RE.fullmatch(cursor):
        errors.add("/starting_after", "must be the id of the last credential of a page")
    errors.raise_if_any()
    return limit, cursor


@routes.get("/api/credentials", allow_head=False)
@requires("read")
async def list_credentials(request: web.Request) -> web.StreamResponse:
    params = query_params(request.query, LIST_PARAMS)
    limit, cursor = _list_filters(params)
    # One more than asked tells whether a next page exists without a second query.
    items = request.app[VAULT].credentials.list(
        service=params.get("service"),
        type=params.get("type"),
        limit=None if limit is None else limit + 1,
        starting_after=cursor,
    )
    headers: dict[str, str] = {}
    if limit is not None and len(items) > limit:
        items = items[:limit]
        following = {**params, "starting_after": items[-1].id}
        # A relative reference (RFC 8288 allows it): no need to trust Host.
        headers["Link"] = f'<{request.rel_url.with_query(following)}>; rel="next"'
    return web.json_response([c.to_json() for c in items], headers=headers)


@routes.post("/api/credentials")
@requires("admin")
async def create_credential(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, allowed=CREATE_FIELDS, required=("service", "name", "secret"))
    vault = request.app[VAULT]
    credential = vault.credentials.add(
        vault.unlock(),
        service=body["service"],
        name=body["name"],
        secret=body["secret"],
        type=body.get("type", "api_key"),
        metadata=body.get("metadata"),
        expires_at=body.get("expires_at"),
    )
    return web.json_response(
        credential.to_json(),
        status=201,
        headers={"Location": f"/api/credentials/{credential.id}"},
    )


@routes.get("/api/credentials/{id}", allow_head=False)
@requires("read")
async def get_credential(request: web.Request) -> web.StreamResponse:
    credential = request.app[VAULT].credentials.get(_credential_id(request))
    return web.json_response(credential.to_json())


@routes.patch("/api/credentials/{id}")
@requires("admin")
async def update_credential(request: web.Request) -> web.StreamResponse:
    credential_id = _credential_id(request)
    body = await read_object(request, allowed=PATCH_FIELDS)
    vault = request.app[VAULT]
    # The data key is needed only to seal a rotated secret.
    dek = vault.unlock() if "secret" in body else None
    credential = vault.credentials.update(credential_id, dek=dek, **body)
    return web.json_response(credential.to_json())


@routes.delete("/api/credentials/{id}")
@requires("admin")
async def delete_credential(request: web.Request) -> web.StreamResponse:
    request.app[VAULT].credentials.delete(_credential_id(request))
    return web.Response(status=204)
