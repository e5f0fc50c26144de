"""The session token a request carries in ``Authorization: Bearer``, and its session.

Here rather than in ``api.auth`` because the guard needs it too: the page's
own origin is let through only with a valid token (DESIGN 15), and the guard
sits below the API layer.
"""

from __future__ import annotations

from aiohttp import web

from vaultd.core.sessions import Session
from vaultd.errors import Unauthorized
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
    """The active session of the request's token, or ``Unauthorized``.

    Looked up in the database (by SHA-256) on every request rather than in
    a cache: ``vaultd session revoke`` runs in another process, and a revoked
    token must fail on the daemon's very next request (threat T4). The
    lookup is one indexed SELECT, well under a millisecond.
    """
    session = request.app[VAULT].sessions.authenticate(bearer_token(request))
    request[SESSION] = session
    return session
