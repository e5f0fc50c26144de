"""The proxy in the app: its route, and the resources it holds while the app runs.

``setup`` adds ``ANY /proxy/{service}/{path}`` and one cleanup context that
opens the upstream connection pool, the proxy cache and the usage writer,
and closes them after the last request in flight.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from vaultd.config import Config
from vaultd.core.sessions import Used
from vaultd.core.vault import Vault
from vaultd.http import fastpaths
from vaultd.http.appkeys import CONFIG, LIVE_USE, PROXY_STATS, VAULT
from vaultd.prices import PriceTable
from vaultd.proxy.cache import ProxyCache
from vaultd.proxy.client import UpstreamClient, upstream_session
from vaultd.proxy.counters import Counters
from vaultd.proxy.forward import Forwarder
from vaultd.proxy.inflight import CONNECTIONS_PER_HOST, InFlight
from vaultd.proxy.usage import UsageRecorder
from vaultd.sources.source import SOURCES
from vaultd.store import counts

# What aiohttp calls for a request with an ``Expect`` header, before any middleware.
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
USAGE = web.AppKey("usage", UsageRecorder)
CACHE = web.AppKey("proxy_cache", ProxyCache)
FORWARDER = web.AppKey("proxy_forwarder", Forwarder)


def client_timeout(config: Config) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    """``ANY /proxy/{service}/{path}`` as a routed handler (see also ``direct.front_door``)."""
    return await request.app[FORWARDER].serve(request)


def make_upstream_client(
    session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout
) -> UpstreamClient:
    """The fast client where aiohttp's internals are as it expects, else the public one."""
    fast = fastpaths.load("client", "vaultd.proxy.client_fast")
    if fast is not None:
        client: UpstreamClient = fast.FastUpstreamClient(session, timeout)
        return client
    return UpstreamClient(session, timeout)


@dataclass(frozen=True, slots=True)
class Stats:
    """``appkeys.ProxyStats``: the usage writer's totals and state, the requests in flight."""

    recorder: UsageRecorder
    inflight: InFlight

    def requests(self) -> Mapping[tuple[str, int], int]:
        return self.recorder.totals.requests

    def refusals(self) -> Mapping[tuple[str, str, str], int]:
        return self.recorder.totals.refusals

    def tokens(self) -> Mapping[tuple[str, str], int]:
        return self.recorder.totals.tokens

    def cost_usd(self) -> Mapping[str, float]:
        return self.recorder.totals.cost_usd

    def in_flight(self) -> int:
        return self.inflight.total()

    def usage_pending_rows(self) -> int:
        return self.recorder.pending_rows()

    def usage_lag_seconds(self) -> float:
        return self.recorder.lag_seconds(time.time())

    def usage_flush_failures(self) -> int:
        return self.recorder.flush_failures


def make_counters(vault: Vault) -> Counters:
    """The limits' live counters, reading what was stored on the vault's connection."""
    db = vault.db
    return Counters(
        load_session=lambda session_id: Used(*counts.session_counts(db, session_id)),
        load_day=lambda credential_id, day: Used(*counts.credential_day(db, credential_id, day)),
        load_recent=lambda session_id, since: counts.recent_requests(db, session_id, since),
    )


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upstream connection pool, the cache and the usage writer.

    Proxied requests go out through one client session. Its options are what
    keeps cookies, environment proxies, decompression and automatic headers
    out of the public path (``client.upstream_session``: do not loosen them);
    the fast client uses only its pool.
    """
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(
        limit=256, limit_per_host=CONNECTIONS_PER_HOST, ttl_dns_cache=300
    )
    timeout = client_timeout(config)
    async with upstream_session(connector, timeout) as client:
        sources = app.get(SOURCES)
        cache = app[CACHE] = ProxyCache(app[VAULT], sources.catalog if sources else None)
        counters = make_counters(app[VAULT])
        # The API shows live use (the database lags by a flush interval).
        app[LIVE_USE] = counters
        recorder = UsageRecorder(
            config.db_path,
            interval=config.usage_flush_interval,
            audit_keep_rows=config.audit_max_rows,
            audit_keep_seconds=config.audit_max_age,
            # Its commits empty the cache; what was in it is looked up again
            # then rather than by the next request (ProxyCache.rewarm).
            after_write=cache.rewarm,
            counters=counters,
        )
        await recorder.start()
        app[USAGE] = recorder
        inflight = InFlight(
            per_session=config.max_session_concurrency, pool_timeout=config.pool_timeout
        )
        app[PROXY_STATS] = Stats(recorder, inflight)
        upstream = make_upstream_client(client, timeout)
        forwarder = app[FORWARDER] = Forwarder(
            config,
            cache,
            recorder,
            upstream,
            inflight,
            counters,
            PriceTable(config.prices),
            sources or None,
        )
        # Each flush writes every request that has ended, settled or not yet.
        recorder.before_flush = forwarder.settle_behind
        try:
            yield
        finally:
            # Runs after in-flight requests have finished: their use is written
            # too, before the client's connections close.
            await recorder.close()


def setup(app: web.Application, *, expect_handler: ExpectHandler) -> None:
    """Add the proxy route and the resources it needs to ``app``."""
    app.cleanup_ctx.append(_proxy_ctx)
    # The whole tail is parsed from the raw target by ``split_proxy_target``.
    app.router.add_route(
        "*", "/proxy/{service}/{path:.*}", handle_proxy, expect_handler=expect_handler
    )
