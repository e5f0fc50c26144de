"""Sending a proxied request upstream: aiohttp's client parts, without ``ClientSession.request``.

``ClientSession.request`` wraps each send in machinery a proxy uses none of:
the cookie jar, redirects, ``auth`` and netrc, environment proxies, tracing,
client middlewares, the merge of default headers and a timer per request.
Measured with ``bench/proxy_bench.py`` on the 2-core reference machine, that
wrapper cost about 40 µs of CPU per proxied call, a fifth of all vaultd spent
on one, and the difference between the proxy being slower than the naive
baseline and faster. So this module drives the parts it is made of directly:
the session's connector (its keep-alive pool and connect timeout),
``ClientRequest`` to frame the request and stream its body, and the
response parser with the per-read timeout. What ``ClientSession.request``
does that a proxy needs is kept here: one retry of a request without a body
when a pooled keep-alive connection turns out to have been closed by the
upstream (aiohttp's own rule, idempotent methods only).

Nothing else reaches a request: no cookies are kept or sent (one upstream's
cookies must never ride along on another session's request), and no
``HTTP(S)_PROXY`` from the environment is looked up (nothing may route keys
through a host the user did not configure). Answers are passed on as the
upstream sent them, never decompressed (vaultd asks for identity and refuses
anything else: ``upstream.outgoing_headers``, ``proxy.UpstreamEncoding``).

Headers: the request carries exactly what ``upstream.outgoing_headers``
chose, and ``Host`` and the body's framing. aiohttp's automatic headers
(``Accept: */*``, its ``Accept-Encoding``, ``User-Agent: Python/3.x
aiohttp/3.x``) would tell the upstream things the client did not say, and a
default ``Content-Type: application/octet-stream`` would label a body the
client left unlabelled.

.. warning:: ``ClientRequest``'s constructor, ``BaseConnector.connect``,
   ``ResponseHandler.set_response_params``, ``ClientRequest.send`` and
   ``ClientResponse.start`` are aiohttp's internals, stable through the 3.x
   versions pyproject.toml allows (the same from 3.11 to 3.14, checked);
   ``tests/test_upstream_client.py`` checks each is there as called, and
   every proxy test goes through them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import hdrs
from aiohttp.client_reqrep import ClientRequest, ClientResponse
from aiohttp.helpers import TimerNoop
from multidict import CIMultiDict
from yarl import URL

# aiohttp's own list (client.IDEMPOTENT_METHODS): requests it sends again,
# once, when a reused connection turns out closed.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# What a pooled connection the upstream closed in the meantime looks like
# (aiohttp retries on exactly these).
_STALE_CONNECTION = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
# Per read from the upstream (ClientSession's default is 256 KiB): answers are
# passed on as they come, so a larger buffer would only hold more of what a
# slow client has not read yet, per connection.
READ_BUFSIZE = 2**16


class UpstreamRequest(ClientRequest):
    """A ``ClientRequest`` that adds no headers of its own (see the module's docstring)."""

    # Read by ``ClientRequest.send``: no default Content-Type for a body.
    _skip_auto_headers = CIMultiDict({hdrs.CONTENT_TYPE: None})

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        return None


class UpstreamClient:
    """Sends requests through ``session``'s connector, with ``timeout``'s connect and read limits.

    The session owns the connector (and closes it); nothing else of it is
    used, so none of its options (cookie jar, ``trust_env``, default headers,
    decompression, timeouts) has any effect here.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> None:
        connector = session.connector
        if connector is None:
            raise ValueError("the session has no connector")
        self._session = session
        self._connector = connector
        self._timeout = timeout
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
