"""How ``vaultd serve`` runs the app on its connections: the access log and idle connections.

``DaemonRunner`` serves on aiohttp's public API alone;
``connection_fast.FastDaemonRunner`` adds, on aiohttp's internals, problems for
unparseable requests, heads bounded while they arrive and the proxy's direct
path. ``runners.daemon_runner`` picks one.

A connection with no complete request is closed after ``[server]
idle_timeout`` either way, so a client that never finishes its headers holds
no socket for long.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from vaultd.http.appkeys import CONFIG
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


class DaemonRunner(web.AppRunner):
    """The ``AppRunner`` of ``vaultd serve``: our access log, idle connections closed.

    Connections without a complete request are closed after ``[server] idle_timeout``.
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
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
