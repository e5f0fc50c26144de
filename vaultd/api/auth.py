"""Bearer tokens on the API: who is calling, and may they do this.

Every request looks its token up in the database (by SHA-256) rather than in a
cache: ``vaultd session revoke`` runs in another process, and a revoked token
must fail on the daemon's very next request (threat T4). The lookup is one
indexed SELECT, well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from aiohttp import web
from aiohttp.typedefs import Handler

from vaultd.core.sessions import Session
from vaultd.errors import Forbidden, Unauthorized
from vaultd.http.appkeys import SESSION, VAULT


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``; messages never repeat it."""
    values = request.headers.getall("Authorization", [])
    if not values:
        raise Unauthorized("this endpoint needs Authorization: Bearer <token>")
    if len(values) > 1:
        raise Unauthorized("send exactly one Authorization header")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be: Bearer <token>")
    return token.strip()


def authenticate(request: web.Request) -> Session:
    """The active session of the request's token, or ``Unauthorized``."""
    session = request.app[VAULT].sessions.authenticate(bearer_token(request))
    request[SESSION] = session
    return session


def require_scope(request: web.Request, scope: str) -> Session:
    session = authenticate(request)
    if not session.has_scope(scope):
        raise Forbidden(f"this token does not have the {scope!r} scope")
    return session


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Decorate a handler so that it runs only for a token with ``scope`` (or admin)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            require_scope(request, scope)
            return await handler(request)

        return checked

    return decorate
