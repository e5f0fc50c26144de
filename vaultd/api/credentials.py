"""``/api/credentials``: metadata of stored keys, and the admin verbs that change them.

No handler here can return a secret: responses are built only from
``Credential.to_json()``, which has no field that could hold one.

The listing holds the vault's credentials (``source: "local"``), oldest
first, then those of the remote sources (DESIGN 13) in config order; a
remote one cannot be written here (409 ``read-only-source``).
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from vaultd.api.auth import requires
from vaultd.core.vault import Vault
from vaultd.errors import ErrorList, FieldError, NotFound, ReadOnlySource, ValidationError
from vaultd.http.appkeys import VAULT
from vaultd.http.jsonio import limit_param, query_params, read_object
from vaultd.models import UUID_RE, Credential, check_service_name, check_type, is_remote_id
from vaultd.sourceconfig import SOURCE_NAME
from vaultd.sources.catalog import Catalog
from vaultd.sources.source import SOURCES
from vaultd.store import remote_uses

routes = web.RouteTableDef()

PAGE_MAX = 100
LIST_PARAMS = ("service", "type", "source", "limit", "starting_after")
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
    if "source" in params and not SOURCE_NAME.fullmatch(params["source"]):
        errors.add("/source", 'must be "local" or the name of a [sources.NAME] table')
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
    vault = request.app[VAULT]
    source = params.get("source")
    want = None if limit is None else limit + 1
    items: list[Credential] = []
    remote_cursor = cursor is not None and is_remote_id(cursor)
    if source in (None, "local") and not remote_cursor:
        # One more than asked tells whether a next page exists without a second query.
        items = vault.credentials.list(
            service=params.get("service"),
            type=params.get("type"),
            limit=want,
            starting_after=cursor,
        )
    catalog = _catalog(request)
    if source != "local" and catalog is not None and (want is None or len(items) < want):
        remote = _remote_items(vault, catalog, params, cursor if remote_cursor else None)
        items += remote if want is None else remote[: want - len(items)]
    headers: dict[str, str] = {}
    if limit is not None and len(items) > limit:
        items = items[:limit]
        following = {**params, "starting_after": items[-1].id}
        # A relative reference (RFC 8288 allows it): no need to trust Host.
        headers["Link"] = f'<{request.rel_url.with_query(following)}>; rel="next"'
    return web.json_response([c.to_json() for c in items], headers=headers)


def _catalog(request: web.Request) -> Catalog | None:
    sources = request.app.get(SOURCES)
    return sources.catalog if sources else None


def _remote_items(
    vault: Vault,
    catalog: Catalog,
    params: dict[str, str],
    cursor: str | None,
    *,
    only: str | None = None,
) -> list[Credential]:
    """The remote credentials the filters keep (after ``cursor``; the one with id
    ``only``), with their local use."""
    items = [
        c
        for c in catalog.listing(params.get("service"))
        if params.get("type") in (None, c.type)
        and params.get("source") in (None, c.source)
        and only in (None, c.id)
    ]
    if cursor is not None:
        ids = [c.id for c in items]
        if cursor not in ids:
            raise ValidationError(
                FieldError("/starting_after", "is not the id of a listed credential")
            )
        items = items[ids.index(cursor) + 1 :]
    used = remote_uses.read(vault.db, (c.id for c in items))
    # A service's default in the vault is the proxy's default, whatever a source marks.
    local_default = {s for s in {c.service for c in items} if vault.credentials.default_for(s)}
    return [
        replace(
            c,
            last_used_at=used.get(c.id, (None, 0))[0],
            use_count=used.get(c.id, (None, 0))[1],
            is_default=c.is_default and c.service not in local_default,
        )
        for c in items
    ]


def _refuse_remote_name(request: web.Request, service: object, name: object) -> None:
    """409 for a local credential named as a remote one of its service: it would
    hide the team's key from every client that names it."""
    catalog = _catalog(request)
    if catalog is None or not isinstance(service, str) or not isinstance(name, str):
        return
    entry = catalog.named(service, name)
    if entry is not None and entry.name == name:
        _refuse_remote(request, entry.id)


def _refuse_remote(request: web.Request, credential_id: str) -> None:
    """409 for a write to a remote source's credential: it is changed at its source."""
    catalog = _catalog(request)
    entry = catalog.get(credential_id) if catalog is not None else None
    if entry is not None:
        raise ReadOnlySource(
            f"{entry.service}/{entry.name} is held by source {entry.source} "
            f"({entry.path}): change it there"
        )


@routes.post("/api/credentials")
@requires("admin")
async def create_credential(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, allowed=CREATE_FIELDS, required=("service", "name", "secret"))
    vault = request.app[VAULT]
    _refuse_remote_name(request, body["service"], body["name"])
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
    credential_id = _credential_id(request)
    vault = request.app[VAULT]
    catalog = _catalog(request)
    entry = catalog.get(credential_id) if catalog is not None else None
    if catalog is not None and entry is not None:
        # Its service's listing only: whether it is the default depends on the others.
        (credential,) = _remote_items(
            vault, catalog, {"service": entry.service}, None, only=entry.id
        )
        return web.json_response(credential.to_json())
    return web.json_response(vault.credentials.get(credential_id).to_json())


@routes.patch("/api/credentials/{id}")
@requires("admin")
async def update_credential(request: web.Request) -> web.StreamResponse:
    credential_id = _credential_id(request)
    _refuse_remote(request, credential_id)
    body = await read_object(request, allowed=PATCH_FIELDS)
    vault = request.app[VAULT]
    if "name" in body:
        _refuse_remote_name(request, vault.credentials.get(credential_id).service, body["name"])
    # The data key is needed only to seal a rotated secret.
    dek = vault.unlock() if "secret" in body else None
    credential = vault.credentials.update(credential_id, dek=dek, **body)
    return web.json_response(credential.to_json())


@routes.delete("/api/credentials/{id}")
@requires("admin")
async def delete_credential(request: web.Request) -> web.StreamResponse:
    credential_id = _credential_id(request)
    _refuse_remote(request, credential_id)
    request.app[VAULT].credentials.delete(credential_id)
    return web.Response(status=204)
