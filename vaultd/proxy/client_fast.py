"""The proxy's fast path upstream: aiohttp's client parts, without ``ClientSession.request``.

``ClientSession.request`` wraps each send in machinery a proxy uses none of:
the cookie jar, redirects, ``auth`` and netrc, environment proxies, tracing,
client middlewares, the merge of default headers and a timer per request.
Measured with ``bench/proxy_bench.py`` on the 2-core reference machine, that
wrapper cost about 40 µs of CPU per proxied call, a fifth of all vaultd spent
on one. So this module drives the parts it is made of directly: the
session's connector (its keep-alive pool and connect timeout),
``ClientRequest`` to frame the request and stream its body, and the
response parser with the per-read timeout. What ``ClientSession.request``
does that a proxy needs is kept: one retry of a request without a body when
a pooled keep-alive connection turns out to have been closed by the upstream
(aiohttp's own rule, idempotent methods only).

It sends exactly what ``proxy.client.UpstreamClient`` sends (the same
headers, no cookies, no environment proxies, no decompression); the test
suite runs every proxy test on both.

.. warning:: ``ClientRequest``'s constructor and ``_skip_auto_headers``,
   ``BaseConnector.connect``, ``ResponseHandler.set_response_params``,
   ``ClientRequest.send``, ``ClientResponse.start`` and ``TimerNoop`` are
   aiohttp's internals. ``internals_missing`` checks each is there as called
   before this path is chosen (``http.fastpaths``); otherwise the public
   ``UpstreamClient`` serves.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import client_proto, client_reqrep, connector, hdrs, helpers
from aiohttp.client_reqrep import ClientRequest, ClientResponse
from aiohttp.helpers import TimerNoop
from multidict import CIMultiDict
from yarl import URL

from vaultd.proxy.client import IDEMPOTENT_METHODS, READ_BUFSIZE, UpstreamClient

# What a pooled connection the upstream closed in the meantime looks like
# (aiohttp retries on exactly these).
_STALE_CONNECTION = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
# Each internal called, and the parameters it is called with.
_CALLED: tuple[tuple[object, str, tuple[str, ...]], ...] = (
    (
        client_reqrep.ClientRequest,
        "__init__",
        ("method", "url", "headers", "data", "loop", "session", "timer", "traces"),
    ),
    (client_reqrep.ClientRequest, "send", ("conn",)),
    (client_reqrep.ClientRequest, "update_auto_headers", ("skip_auto_headers",)),
    (client_reqrep.ClientResponse, "start", ("connection",)),
    (connector.BaseConnector, "connect", ("req", "traces", "timeout")),
    (
        client_proto.ResponseHandler,
        "set_response_params",
        (
            "timer",
            "skip_payload",
            "read_until_eof",
            "auto_decompress",
            "read_timeout",
            "read_bufsize",
        ),
    ),
)


def internals_missing() -> str | None:
    """What this module needs of aiohttp and does not find as expected, or None."""
    for owner, name, params in _CALLED:
        function = getattr(owner, name, None)
        where = f"{getattr(owner, '__name__', owner)}.{name}"
        if not callable(function):
            return f"{where} is gone"
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return f"{where} has no signature to check"
        absent = [p for p in params if p not in signature.parameters]
        if absent:
            return f"{where} takes no {', '.join(absent)}"
    if not hasattr(client_reqrep.ClientRequest, "_skip_auto_headers"):
        return "ClientRequest._skip_auto_headers is gone"
    if not callable(getattr(helpers, "TimerNoop", None)):
        return "helpers.TimerNoop is gone"
    return None


class UpstreamRequest(ClientRequest):
    """A ``ClientRequest`` that adds no headers of its own (see the module's docstring)."""

    # Read by ``ClientRequest.send``: no default Content-Type for a body.
    _skip_auto_headers = CIMultiDict({hdrs.CONTENT_TYPE: None})

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        return None


class FastUpstreamClient(UpstreamClient):
    """Sends requests through ``session``'s connector, with ``timeout``'s connect and read limits.

    Only the session's connector (its pool) is used; the session's request
    options play no part here.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> None:
        super().__init__(session, timeout)
        connector = session.connector
        if connector is None:
            raise ValueError("the session has no connector")
        self._connector = connector
        self._loop = asyncio.get_running_loop()
        # No total timeout: a stream may last as long as the upstream sends
        # (read_timeout bounds each wait instead).
        self._timer = TimerNoop()

    async def send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
    ) -> ClientResponse:
        """The upstream's answer, its head read; release it with ``async with``.

        Raises what aiohttp raises: ``aiohttp.ClientError`` subclasses,
        ``TimeoutError`` when connecting or a read takes too long, and (in
        principle) a bare ``OSError`` from the socket.
        """
        retry = body is None and method in IDEMPOTENT_METHODS
        while True:
            request = UpstreamRequest(
                method,
                url,
                headers=headers,
                data=body,
                loop=self._loop,
                session=self._session,
                timer=self._timer,
                traces=[],
            )
            try:
                return await self._exchange(request)
            except aiohttp.ClientConnectorError:
                # Never connected (refused, DNS, TLS certificate): nothing was
                # cut off, and trying again only doubles the wait (nor does
                # aiohttp retry these), although they are ClientOSErrors too.
                raise
            except _STALE_CONNECTION:
                if not retry:
                    raise
                retry = False

    async def _exchange(self, request: UpstreamRequest) -> ClientResponse:
        connection = await self._connector.connect(request, traces=[], timeout=self._timeout)
        protocol = connection.protocol
        if protocol is None:  # a connection from connect() always has one
            connection.close()
            raise aiohttp.ClientConnectionError("the upstream connection has no protocol")
        protocol.set_response_params(
            timer=self._timer,
            skip_payload=request.method == hdrs.METH_HEAD,
            read_until_eof=True,
            auto_decompress=False,
            read_timeout=self._timeout.sock_read,
            read_bufsize=READ_BUFSIZE,
        )
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException:
            connection.close()
            raise
        return response
