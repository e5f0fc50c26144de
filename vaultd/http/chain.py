"""The middleware chain every request of the app passes, and the record of it.

``create_app`` installs ``StandardChain.middlewares`` and keeps the chain
under ``STANDARD_CHAIN``. The proxy's direct path (``proxy.direct``) stands in
for exactly this chain: it checks that the app still has these very objects
(identity, not names) and nothing more, and runs the same ``guard``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler, Middleware

from vaultd.config import Config
from vaultd.http.guard import Guard
from vaultd.http.middleware import checked, standard_headers


@dataclass(frozen=True)
class StandardChain:
    """The app's middlewares (one: ``middleware.checked``) and the guard they run."""

    guard: Guard
    middlewares: tuple[Middleware, ...]

    async def expect_handler(self, request: web.Request) -> None:
        """``Expect: 100-continue`` answered only for a request the guard lets through.

        aiohttp answers ``Expect`` before any middleware runs. A request the
        guard refuses gets no ``100 Continue``: the middleware then answers
        it with its problem, so a web page or a foreign Host learns nothing
        first, and no body is asked for. (An Expect other than
        100-continue is 417, as aiohttp's own handler answers.)
        """
        if not self.guard.passes(request):
            return
        if request.version != HttpVersion11:
            return
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim answer is not part of the response's bytes.
        request.writer.output_size = 0

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
