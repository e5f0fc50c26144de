"""``vaultd serve``'s connections on aiohttp's internals: problems for unparseable requests,
and a bound on request heads while they arrive.

aiohttp's HTTP parser answers a request it cannot parse (no Host in HTTP/1.1,
a control character or CRLF in a header, an over-long line) itself, as plain
text, without running the middlewares, and logs a traceback at ERROR. DESIGN
5 wants every response to carry ``X-Request-Id`` and every error to be a
problem, so the connections here answer with one and log one line.

Slow clients are bounded here too: a request head (request line and headers)
may not grow past ``MAX_HEAD`` while it is being sent (a head that arrives
whole is checked by ``http.guard`` on either path).

Proxied calls go past aiohttp's router on either path (``proxy.direct``,
installed by ``DaemonRunner.setup``).

.. warning:: ``AppRunner._make_server``, ``Server._kwargs`` and ``_loop``,
   ``RequestHandler.handle_error``'s signature, its ``_waiter``,
   ``_messages`` and ``_request_count``, and ``web_protocol._ErrInfo`` are
   aiohttp's internals. ``internals_missing`` checks them before this path is
   chosen (``http.fastpaths``); otherwise ``connection.DaemonRunner`` serves
   on the public API alone.
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web, web_protocol, web_runner, web_server
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_request import BaseRequest

from vaultd.daemon.connection import DaemonRunner, log
from vaultd.errors import VaultdError
from vaultd.http import fastpaths
from vaultd.http.errors import InternalError
from vaultd.http.guard import HEAD_TOO_LARGE, MAX_HEAD
from vaultd.http.middleware import new_request_id, set_standard_headers
from vaultd.http.problems import problem_response, status_problem

_HANDLER_SLOTS = ("_request_count", "_waiter", "_messages")
_SERVER_ATTRIBUTES = ("_kwargs", "_loop", "request_factory", "handler_cancellation")


def internals_missing() -> str | None:
    """What this module needs of aiohttp and does not find as expected, or None."""
    if not inspect.iscoroutinefunction(getattr(web_runner.AppRunner, "_make_server", None)):
        return "AppRunner._make_server is gone"
    slots = getattr(web_protocol.RequestHandler, "__slots__", ())
    absent = [name for name in _HANDLER_SLOTS if name not in slots]
    if absent:
        return f"RequestHandler has no {', '.join(absent)}"
    parameters = list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    if parameters != ["self", "request", "status", "exc", "message"]:
        return "RequestHandler.handle_error takes other parameters"
    if getattr(web_protocol, "_ErrInfo", None) is None:
        return "web_protocol._ErrInfo is gone"
    init = inspect.signature(web_server.Server.__init__).parameters
    for name in ("handler", "request_factory", "handler_cancellation", "loop"):
        if name not in init:
            return f"web.Server takes no {name}"
    return None


class ProblemRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with problems and heads bounded while they arrive.

    Its notes (``http.connections``) are the ``NumberedConnection``'s in front
    of it, as on the public path (``DaemonRunner.server``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of a request head still incomplete, counted while the
        # connection waits for its next request.
        self._head_bytes = 0
        self._head_refused = False

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
            self._messages.append(
                (web_protocol._ErrInfo(431, refused, HEAD_TOO_LARGE), EMPTY_PAYLOAD)
            )
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


class FastDaemonRunner(DaemonRunner):
    """``DaemonRunner`` whose connections are ``ProblemRequestHandler``s."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's startup
        missing = [name for name in _SERVER_ATTRIBUTES if not hasattr(server, name)]
        if missing:
            # Checked on the instance too: internals_missing() sees only classes.
            fastpaths.fall_back("server", f"aiohttp's Server has no {', '.join(missing)}")
            return server
        kwargs: dict[str, Any] = server._kwargs
        return ProblemServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
