"""How ``vaultd serve`` runs the app on its connections: errors and access log.

Problem responses for requests that aiohttp refuses before routing them:
aiohttp's HTTP parser answers a request it cannot parse (no Host in HTTP/1.1,
a control character or CRLF in a header, an over-long line) itself, as plain
text, without running the middlewares, and logs a traceback at ERROR. DESIGN
5 wants every response to carry ``X-Request-Id`` and every error to be a
problem, so the runner here builds connections whose ``handle_error`` does
that, and logs one line.

Proxied calls are handed straight to the proxy here (``proxy.front_door``),
past aiohttp's router and middleware chain, with the same checks; everything
else goes through the app.

Slow clients are bounded here too: a request head (request line and headers)
may not grow past ``MAX_HEAD`` while it is being sent, and a connection with
no complete request is closed after ``[server] idle_timeout``, so a client
that never finishes its headers holds neither much memory nor a socket for
long.

.. warning:: This leans on aiohttp internals that have been stable through
   3.x (``AppRunner._make_server``, ``Server._kwargs``, the signature of
   ``RequestHandler.handle_error``; for ``MAX_HEAD``, the handler's
   ``_waiter``, ``_messages`` and ``_request_count`` and ``_ErrInfo``); the
   API tests are served by this runner, and ``tests/test_error_shape.py`` and
   ``tests/test_raw_http.py`` send it unparseable, oversize and unfinished
   requests, so an aiohttp upgrade that moves them fails a test.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import _ErrInfo
from aiohttp.web_request import BaseRequest

from vaultd.errors import VaultdError
from vaultd.http.appkeys import CONFIG
from vaultd.http.errors import InternalError
from vaultd.http.guard import HEAD_TOO_LARGE, MAX_HEAD, socket_port
from vaultd.http.middleware import new_request_id, set_standard_headers
from vaultd.http.problems import problem_response, status_problem
from vaultd.proxy import forward as proxy
from vaultd.proxy.arrivals import ARRIVALS
from vaultd.tokens import redact_path

log = logging.getLogger("vaultd.http")


class ProblemRequestHandler(web.RequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of a request head still incomplete, counted while the
        # connection waits for its next request.
        self._head_bytes = 0
        self._head_refused = False
        # The port this connection came in on, for the Host check
        # (middleware._listening_port); noted once in connection_made.
        self.listening_port: int | None = None
        # When this connection's latest request head arrived, in the order of
        # arrivals.ARRIVALS (for the proxy cache's check; see there).
        self.head_arrival: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listening_port = socket_port(transport)

    def data_received(self, data: bytes) -> None:
        """aiohttp's, plus ``MAX_HEAD`` on a head that has not ended yet.

        aiohttp bounds each header line and the number of headers, which still
        lets a client that never ends its headers park about 2 MiB of them in
        the parser per connection until ``idle_timeout``; this bounds it to
        ``MAX_HEAD``. Bytes that arrive while a request is being handled are
        its body (or pipelined requests) and are not counted.
        """
        if self._head_refused:
            return  # the 431 is on its way and the connection closes after it
        requests_before = self._request_count
        super().data_received(data)
        if self._request_count != requests_before:
            self._head_bytes = 0  # a head ended: the usual case, decided first
            self.head_arrival = ARRIVALS.tick()
            return
        # No message came of ``data``, so aiohttp left the state read here as
        # it was before ``data``. Waiting for a head: nothing parsed yet on
        # this connection, or the request loop idle (not while a finished
        # request's unread body is still being drained, whose bytes are not a
        # head, nor while a request is being handled: its body, or pipelining).
        waiter = self._waiter
        if self._messages or not (
            self._request_count == 0 or (waiter is not None and not waiter.done())
        ):
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD:
            self._head_refused = True
            # Answered the way aiohttp answers a head its parser refuses.
            refused = BadHttpMessage(HEAD_TOO_LARGE)
            self._messages.append((_ErrInfo(431, refused, HEAD_TOO_LARGE), EMPTY_PAYLOAD))
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp's own: half a response is out, no other can follow.
            raise ConnectionError("response already started; cannot send an error")
        request_id = new_request_id()
        error: VaultdError
        if status >= 500:
            # Not the exception's text: it may quote request bytes (a token).
            name = type(exc).__name__ if exc is not None else "error"
            log.error("unhandled %s outside the app (request %s)", name, request_id)
            error = InternalError(f"unexpected error; the daemon's log has request {request_id}")
        else:
            # The parser's message quotes the offending bytes: not repeated.
            log.info("refused a malformed HTTP request with %d (request %s)", status, request_id)
            detail = HEAD_TOO_LARGE if status == 431 else "the request is not valid HTTP/1.1"
            error = status_problem(status, detail)
        response = problem_response(error, request_id)
        set_standard_headers(response, request_id)
        response.force_close()
        return response


class ProblemServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class AccessLogger(AbstractAccessLogger):
    """One line per request: never headers (Authorization), never the query string.

    A proxied request that succeeded is not logged here: the audit table holds
    a fuller row for each of them (``vaultd audit``), and a log line per call
    cost the proxy about a sixth of its throughput. Failed proxied requests and
    every API request are logged.
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        # The raw target: a proxied request that succeeded had one starting
        # so (split_proxy_target refuses others), and it is not decoded for this.
        if response.status < 400 and request.raw_path.startswith("/proxy/"):
            return
        self.logger.info(
            "%s %s %d %.1fms request=%s",
            request.method,
            # Percent-encoded (a decoded %0a would forge a log line), tokens
            # cut also where the client percent-encoded them.
            redact_path(request.rel_url.raw_path),
            response.status,
            time * 1000,
            response.headers.get("X-Request-Id", "-"),
        )


class DaemonRunner(web.AppRunner):
    """The ``AppRunner`` of ``vaultd serve``: protocol errors as problems, our access log.

    Connections without a complete request are closed after ``[server] idle_timeout``.
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("access_log_class", AccessLogger)
        kwargs.setdefault("access_log", logging.getLogger("vaultd.access"))
        config = app.get(CONFIG)
        if config is not None:
            # aiohttp's keep-alive timer starts when a connection opens and
            # again after each answer, and is not reset by a partial request:
            # it closes connections that never finish their headers, which
            # its default (about an hour) would let pile up.
            kwargs.setdefault("keepalive_timeout", config.idle_timeout)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's startup
        kwargs: dict[str, Any] = server._kwargs
        return ProblemServer(
            # Proxied calls skip the router and the middleware chain (the
            # same checks run on them): see proxy.front_door.
            proxy.front_door(self.app, server.request_handler),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
