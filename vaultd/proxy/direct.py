"""The proxy's direct path: proxied calls served past aiohttp's router and middleware chain.

aiohttp's router, middleware chain and ``on_response_prepare`` signal are
generic machinery that cost a proxied call about a tenth of its CPU time
while doing nothing for it but the checks; ``front_door`` runs the same
checks from the same code and hands the request straight to the proxy.
It is one of the daemon's fast paths (``daemon.fastpaths``): without it,
every request goes through the app, with the same result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.chain import STANDARD_CHAIN
from vaultd.http.middleware import new_request_id, problem_for, set_standard_headers
from vaultd.proxy.routes import FORWARDER
from vaultd.services import Service

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
    the same order and from the same code: a request id, ``Guard`` (framing,
    head size, Host, Origin), then the proxy, with errors rendered by
    ``problem_for`` and the standard headers set, as the middlewares and the
    ``on_response_prepare`` signal do. What ``_direct`` does not take goes
    through the app (``routed``) as before.
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
    services = forwarder.config.services

    async def serve(request: BaseRequest) -> web.StreamResponse:
        if not isinstance(request, web.Request) or not _direct(request, services):
            return await routed(request)
        request_id = new_request_id()
        request[REQUEST_ID] = request_id
        try:
            refused = guard.refusal(request)
            if refused is None:
                # Its answer carries the standard headers already (``answer``).
                return await forwarder.serve(request, request_id)
            response: web.StreamResponse = refused
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = problem_for(request, exc, request_id)
        set_standard_headers(response, request_id)
        return response

    return serve
