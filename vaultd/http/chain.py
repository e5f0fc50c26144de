"""The middleware chain every request of the app passes, and the record of it.

``create_app`` installs ``StandardChain.middlewares`` and keeps the chain
under ``STANDARD_CHAIN``. The proxy's direct path (``proxy.direct``) stands in
for exactly this chain: it checks that the app still has these very objects
(identity, not names) and nothing more, and runs the same ``guard``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vaultd.config import Config
from vaultd.http.guard import Guard
from vaultd.http.middleware import checked, standard_headers


@dataclass(frozen=True)
class StandardChain:
    """The app's middlewares (one: ``middleware.checked``) and the guard they run."""

    guard: Guard
    middlewares: tuple[Middleware, ...]

    def is_all_of(self, app: web.Application) -> bool:
        """Whether ``app`` runs exactly this chain and the standard headers, nothing more."""
        return tuple(app.middlewares) == self.middlewares and list(app.on_response_prepare) == [
            standard_headers
        ]


def standard_chain(config: Config) -> StandardChain:
    guard = Guard(config)

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await checked(request, guard, handler)

    return StandardChain(guard, (guarded,))


STANDARD_CHAIN = web.AppKey("standard_chain", StandardChain)
