"""``/api/sessions``: minting, listing and revoking the tokens local tools hold."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from vaultd import units
from vaultd.api.auth import authenticate, requires
from vaultd.config import Config
from vaultd.core.policy import check_policy
from vaultd.core.sessions import (
    ALL_SERVICES,
    DEFAULT_SCOPES,
    KEEP,
    Session,
    check_scopes,
    check_services,
    check_session_limits,
)
from vaultd.errors import ErrorList, FieldError, Forbidden, NotFound, ValidationError
from vaultd.http.appkeys import LIVE_CONFIG, LIVE_USE, VAULT
from vaultd.http.jsonio import read_object
from vaultd.models import UUID_RE, check_name

routes = web.RouteTableDef()

CREATE_FIELDS = ("name", "scopes", "services", "ttl", "limits", "policy")
PATCH_FIELDS = ("limits", "policy")


def session_json(request: web.Request, session: Session) -> dict[str, object]:
    """The session's JSON, its ``used`` as the proxy counts it now (the file lags a flush)."""
    body = session.to_json()
    live = request.app.get(LIVE_USE)
    used = live.session_used(session.id) if live is not None else None
    if used is not None:
        body["used"] = used.to_json()
    return body


def parse_ttl(value: object, config: Config) -> int | None:
    """Seconds to live (``None``: never expires) from the body's ``ttl`` (``units.parse_ttl``)."""
    try:
        return units.parse_ttl(value, config.max_ttl)
    except ValueError as exc:
        raise ValidationError(FieldError("/ttl", str(exc))) from None


@routes.get("/api/sessions", allow_head=False)
@requires("read")
async def list_sessions(request: web.Request) -> web.StreamResponse:
    return web.json_response([session_json(request, s) for s in request.app[VAULT].sessions.list()])


@routes.post("/api/sessions")
@requires("admin")
async def create_session(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, allowed=CREATE_FIELDS, required=("name",))
    config = request.app[LIVE_CONFIG].config
    values = {
        "name": body["name"],
        "scopes": body.get("scopes", list(DEFAULT_SCOPES)),
        "services": body.get("services", [ALL_SERVICES]),
        "ttl": body.get("ttl", config.default_ttl),
        "limits": body.get("limits"),
        "policy": body.get("policy"),
    }
    # Every field is checked before anything is written, so one response
    # lists every mistake; the store checks the same again when it inserts.
    checks: dict[str, Callable[[object], object]] = {
        "name": check_name,
        "scopes": check_scopes,
        "services": lambda v: check_services(v, config.services),
        "ttl": lambda v: parse_ttl(v, config),
        "limits": check_session_limits,
        "policy": check_policy,
    }
    errors = ErrorList()
    checked = {key: errors.check(check, values[key]) for key, check in checks.items()}
    errors.raise_if_any()
    ttl = checked["ttl"]
    session, token = request.app[VAULT].sessions.create(
        name=values["name"],
        scopes=values["scopes"],
        services=values["services"],
        ttl=ttl if isinstance(ttl, int) else None,
        known_services=config.services,
        limits=values["limits"],
        policy=values["policy"],
    )
    # The token exists in this response and nowhere else, ever.
    return web.json_response(
        {**session_json(request, session), "token": token},
        status=201,
        headers={"Location": f"/api/sessions/{session.id}"},
    )


def _session_id(request: web.Request) -> str:
    value = request.match_info["id"]
    # Not echoed: a path segment is client text, and could be anything (a token).
    if not UUID_RE.fullmatch(value):
        raise NotFound("no session with that id")
    return value


@routes.patch("/api/sessions/{id}")
@requires("admin")
async def update_session(request: web.Request) -> web.StreamResponse:
    """Change a session's limits and policy (each replaced wholesale; null clears
    it). Its use so far stays; the proxy applies the change to the next request."""
    session_id = _session_id(request)
    body = await read_object(request, allowed=PATCH_FIELDS)
    session = request.app[VAULT].sessions.update(
        session_id, limits=body.get("limits", KEEP), policy=body.get("policy", KEEP)
    )
    return web.json_response(session_json(request, session))


@routes.delete("/api/sessions/{id}")
async def delete_session(request: web.Request) -> web.StreamResponse:
    """Admin may revoke any session; any session may revoke itself (a tool logging out)."""
    caller = authenticate(request)
    session_id = request.match_info["id"]
    if session_id != caller.id:
        if not caller.has_scope("admin"):
            # Said before looking the id up, so a non-admin learns nothing about it.
            raise Forbidden("a token may revoke only itself unless it has the 'admin' scope")
        if not UUID_RE.fullmatch(session_id):
            raise NotFound("no session with that id")
    request.app[VAULT].sessions.revoke(session_id)
    return web.Response(status=204)
