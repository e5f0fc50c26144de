"""How ``vaultd serve`` runs the app on its connections: the access log, idle connections,
and what each connection notes about itself.

``DaemonRunner`` serves on aiohttp's public API alone, proxied calls past the
router (``proxy.direct``); ``connection_fast.FastDaemonRunner`` adds, on
aiohttp's internals, problems for unparseable requests and heads bounded
while they arrive. ``runners.daemon_runner`` picks one.

A connection with no complete request is closed after ``[server]
idle_timeout`` either way, so a client that never finishes its headers holds
no socket for long.

Either way each connection notes its listening port and when its latest
bytes arrived (``http.connections``): ``NumberedConnection``, the protocol
the transport calls, in front of aiohttp's handler (or the fast path's), on
the public API alone. It spares the proxy cache's database check for most
requests under load (a tenth of the CPU a proxied call cost with fast
paths off, measured with ``bench/proxy_bench.py --fast-paths off``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from vaultd.http.appkeys import CONFIG
from vaultd.http.connections import ConnectionNotes
from vaultd.http.guard import socket_port
from vaultd.proxy.arrivals import ARRIVALS
from vaultd.proxy.direct import front
from vaultd.tokens import redact_path

log = logging.getLogger("vaultd.http")


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


class NumberedConnection(asyncio.Protocol, ConnectionNotes):
    """One connection: aiohttp's handler (``handler``), behind notes of its own.

    Every call the transport makes is passed on to ``handler`` unchanged;
    ``data_received`` first takes a number from ``ARRIVALS``. The number is of
    the latest bytes, not of the head's last ones: bytes after the head only
    make it later, which makes the proxy cache check more often, never less.
    Every read is numbered, not only one that ends a head, because aiohttp
    may parse bytes later than it reads them (those held back while an
    Upgrade request is handled are parsed when it ends), and such a request
    must not carry an earlier read's number.
    """

    __slots__ = ("handler", "head_arrival", "listening_port")

    def __init__(self, handler: asyncio.Protocol) -> None:
        self.handler = handler
        self.head_arrival: int | None = None
        self.listening_port: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.listening_port = socket_port(transport)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # Before aiohttp sees the bytes: a check that reads a number this
        # large or larger ran after they had arrived.
        self.head_arrival = ARRIVALS.tick()
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class NumberingServer:
    """aiohttp's ``web.Server`` as a site sees it, making ``NumberedConnection``s.

    A site calls it to make each connection's protocol; anything else asked
    of it is the server's own.
    """

    def __init__(self, server: web.Server) -> None:
        self._server = server

    def __call__(self) -> NumberedConnection:
        return NumberedConnection(self._server())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class DaemonRunner(web.AppRunner):
    """The ``AppRunner`` of ``vaultd serve``: our access log, idle connections closed,
    connections that note their port and arrivals.

    Connections without a complete request are closed after ``[server] idle_timeout``.
    """

    @property
    def server(self) -> web.Server | None:
        """The server, as aiohttp's sites read it to make each connection's protocol.

        Wrapped in ``NumberingServer``, the fast path's too. A site that made
        its connections another way would leave them without notes: every
        request is then checked in full.
        """
        server = super().server
        if server is None:
            return None
        # Not a web.Server, but it stands in for one wherever a site uses it:
        # as the protocol factory, and for anything else through __getattr__.
        return cast("web.Server", NumberingServer(server))

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # Whether proxied calls skip the router and middlewares (proxy.direct),
        # known after setup().
        self.direct = False
        kwargs.setdefault("access_log_class", AccessLogger)
        kwargs.setdefault("access_log", logging.getLogger("vaultd.access"))
        # A request body is the client's bytes, passed on as they came: the
        # proxy forwards its Content-Encoding header, so the body must stay
        # encoded too (decoded here, an upstream would be sent plain bytes
        # labelled gzip). No vaultd endpoint takes a compressed body.
        kwargs.setdefault("auto_decompress", False)
        config = app.get(CONFIG)
        if config is not None:
            # aiohttp's keep-alive timer starts when a connection opens and
            # again after each answer, and is not reset by a partial request:
            # it closes connections that never finish their headers, which
            # its default (about an hour) would let pile up.
            kwargs.setdefault("keepalive_timeout", config.idle_timeout)
        super().__init__(app, **kwargs)

    async def setup(self) -> None:
        """aiohttp's setup (the app's startup), then proxied calls fronted (``proxy.direct``).

        Before any site exists: connections take the server's handler as they open.
        """
        await super().setup()
        server = super().server
        if server is not None:
            self.direct = front(server, self.app)
