"""The proxy's direct path: proxied calls served past aiohttp's router and middleware chain.

aiohttp's router, middleware chain and ``on_response_prepare`` signal are
generic machinery that cost a proxied call about a tenth of its CPU time
while doing nothing for it but the checks; ``front_door`` runs the same
checks from the same code and hands the request straight to the proxy.

``front`` installs it on aiohttp's ``web.Server`` through that class's
public ``request_handler`` attribute, which each new connection reads. It
is public but not in aiohttp's reference documentation, so it is checked
at start and, where it is missing, every request goes through the app,
with the same answers (one warning in the log). It needs none of aiohttp's
internals, so it serves on the public path too (``VAULTD_FAST_PATHS=off``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.chain import STANDARD_CHAIN
from vaultd.http.middleware import checked, ensure_standard_headers
from vaultd.proxy.routes import FORWARDER
from vaultd.services import Service

log = logging.getLogger("vaultd")

# What aiohttp's server calls for each request (``web.Server``'s handler).
RequestHandlerFn = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def _direct(request: web.Request, services: Mapping[str, Service]) -> bool:
    """Whether the router would hand ``request`` to ``handle_proxy``, as is.

    The route is ``/proxy/{service}/{path:.*}``, matched on the decoded path:
    without a ``%`` in the raw path, decoded and raw are the same text, and a
    configured service name is a plain segment. ``Expect`` is answered by the
    app before any middleware (a 100 Continue), so such requests go through it.
    """
    path = request.raw_path.partition("?")[0]
    if not path.startswith("/proxy/") or "%" in path:
        return False
    service, slash, _ = path[len("/proxy/") :].partition("/")
    return bool(slash) and service in services and hdrs.EXPECT not in request.headers


def front_door(app: web.Application, routed: RequestHandlerFn) -> RequestHandlerFn:
    """The handler for ``vaultd serve``'s requests: proxied calls directly, the rest via ``routed``.

    aiohttp's router, middleware chain and ``on_response_prepare`` signal are
    generic machinery that cost a proxied call about a tenth of its CPU time
    while doing nothing for it but the checks. Here the same checks run, in
    the same order and from the same code (``middleware.checked``: a request
    id, ``Guard``, then the proxy, errors as problems), and the standard
    headers are set as the ``on_response_prepare`` signal sets them. What
    ``_direct`` does not take goes through the app (``routed``) as before.
    """
    forwarder = app.get(FORWARDER)
    if forwarder is None:
        return routed  # an app without the proxy (some tests build one)
    chain = app.get(STANDARD_CHAIN)
    if chain is None or not chain.is_all_of(app):
        # This path stands in for exactly what create_app installs; whatever
        # else an app adds must see proxied requests too, so they go through it.
        return routed
    guard = chain.guard

    async def serve(request: BaseRequest) -> web.StreamResponse:
        # The services as configured now: a reload (SIGHUP) replaces the config.
        services = forwarder.config.services
        if not isinstance(request, web.Request) or not _direct(request, services):
            return await routed(request)
        response = await checked(request, guard, forwarder.serve)
        # What the on_response_prepare signal does for the app's responses.
        ensure_standard_headers(response, request[REQUEST_ID])
        return response

    return serve


def front(server: web.Server, app: web.Application) -> bool:
    """Put ``front_door`` before ``server``'s handler; whether proxied calls now go direct.

    Call it before any connection is made: aiohttp's connections take the
    server's ``request_handler`` when they open. Where it is missing or
    cannot be set (an aiohttp that renamed it or made it read-only), nothing
    changes and every request goes through the app, as it would without
    this path.
    """
    routed = getattr(server, "request_handler", None)
    if not callable(routed):
        return _off("aiohttp's Server has no request_handler")
    door = front_door(app, routed)
    if door is routed:
        return False
    try:
        server.request_handler = door
    except (AttributeError, TypeError):
        return _off("aiohttp's Server.request_handler cannot be set")
    return True


def _off(why: str) -> bool:
    log.warning(
        "the proxy's direct path: off (%s); proxied calls go through the app's router"
        " and middlewares",
        why,
    )
    return False
