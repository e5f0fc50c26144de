"""How ``vaultd serve`` runs the app on its connections: errors and access log.

Problem responses for requests that aiohttp refuses before routing them:
aiohttp's HTTP parser answers a request it cannot parse (no Host in HTTP/1.1,
a control character or CRLF in a header, an over-long line) itself, as plain
text, without running the middlewares, and logs a traceback at ERROR. DESIGN
5 wants every response to carry ``X-Request-Id`` and every error to be a
problem, so the runner here builds connections whose ``handle_error`` does
that, and logs one line.

.. warning:: This leans on aiohttp internals that have been stable through
   3.x (``AppRunner._make_server``, ``Server._kwargs``, the signature of
   ``RequestHandler.handle_error``); the API tests are served by this runner
   and ``tests/test_error_shape.py`` sends it unparseable requests, so an
   aiohttp upgrade that moves them fails a test.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from vaultd.errors import VaultdError
from vaultd.middleware import set_standard_headers
from vaultd.models import uuid7
from vaultd.problems import InternalError, problem_response, redact, status_problem

log = logging.getLogger("vaultd.http")


class ProblemRequestHandler(web.RequestHandler):
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
        request_id = uuid7()
        error: VaultdError
        if status >= 500:
            # Not the exception's text: it may quote request bytes (a token).
            name = type(exc).__name__ if exc is not None else "error"
            log.error("unhandled %s outside the app (request %s)", name, request_id)
            error = InternalError(f"unexpected error; the daemon's log has request {request_id}")
        else:
            # The parser's message quotes the offending bytes: not repeated.
            log.info("refused a malformed HTTP request with %d (request %s)", status, request_id)
            error = status_problem(status, "the request is not valid HTTP/1.1")
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
        if response.status < 400 and request.path.startswith("/proxy/"):
            return
        self.logger.info(
            "%s %s %d %.1fms request=%s",
            request.method,
            # Still percent-encoded: a decoded %0a would forge a log line.
            redact(request.rel_url.raw_path),
            response.status,
            time * 1000,
            response.headers.get("X-Request-Id", "-"),
        )


class DaemonRunner(web.AppRunner):
    """The ``AppRunner`` of ``vaultd serve``: protocol errors as problems, our access log."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("access_log_class", AccessLogger)
        kwargs.setdefault("access_log", logging.getLogger("vaultd.access"))
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's startup
        kwargs: dict[str, Any] = server._kwargs
        return ProblemServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
