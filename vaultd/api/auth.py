"""Bearer tokens on the API: who is calling, and may they do this.

The token is read and its session looked up by ``http.bearer`` (the guard
uses it too); this adds the scope checks handlers declare.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from aiohttp import web
from aiohttp.typedefs import Handler

from vaultd.core.sessions import Session
from vaultd.errors import Forbidden
from vaultd.http.bearer import authenticate, bearer_token

__all__ = ["authenticate", "bearer_token", "require_scope", "requires"]


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
