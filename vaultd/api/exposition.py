"""The series of ``GET /metrics``, in the Prometheus text format, by prometheus-client.

Imported by ``metrics`` at the first scrape, not with the daemon: the library
costs the daemon's start some 50 ms and its memory a few MiB, which a daemon
nobody scrapes should not pay. A registry of its own per scrape and a
collector that reads the daemon's counters then: no global state.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vaultd import __version__
from vaultd.http.appkeys import LIVE_CONFIG, PROXY_STATS, VAULT
from vaultd.models import now

__all__ = ["CONTENT_TYPE", "render"]


class VaultdCollector(Collector):
    """The series of ``GET /metrics``, read from ``app`` at each ``collect``."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._build()
        yield from self._proxy()
        yield from self._stored()

    def _build(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "vaultd_build_info",
            "The running vaultd: always 1, its version and Python in the labels",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _proxy(self) -> Iterator[Metric]:
        stats = self.app.get(PROXY_STATS)
        requests = CounterMetricFamily(
            "vaultd_proxy_requests",
            "Proxied requests audited since the daemon started, by service and status code"
            " (refusals by vaultd included)",
            labels=["service", "code"],
        )
        refusals = CounterMetricFamily(
            "vaultd_proxy_refusals",
            "Proxied requests vaultd refused before they went upstream, by service and reason"
            " (the problem's type slug; limit: the limit of a limit-exceeded)",
            labels=["service", "reason", "limit"],
        )
        tokens = CounterMetricFamily(
            "vaultd_proxy_tokens",
            "Tokens the upstreams' answers reported, by service and kind"
            " (input, output, cached_input: cached input is part of input)",
            labels=["service", "kind"],
        )
        cost = CounterMetricFamily(
            "vaultd_proxy_cost_usd",
            "Cost in USD of the answers that had a price, by service",
            labels=["service"],
        )
        in_flight = GaugeMetricFamily(
            "vaultd_proxy_requests_in_flight", "Proxied requests in flight now"
        )
        pending = GaugeMetricFamily(
            "vaultd_usage_writer_pending_rows", "Audit rows recorded and not yet written"
        )
        lag = GaugeMetricFamily(
            "vaultd_usage_writer_lag_seconds",
            "How long the oldest audit row not yet written has waited (0 when none waits)",
        )
        failures = CounterMetricFamily(
            "vaultd_usage_writer_flush_failures",
            "Usage flushes that failed (and were retried) since the daemon started",
        )
        if stats is not None:
            for (service, code), n in sorted(stats.requests().items()):
                requests.add_metric([service, str(code)], n)
            for (service, reason, limit), n in sorted(stats.refusals().items()):
                refusals.add_metric([service, reason, limit], n)
            for (service, kind), n in sorted(stats.tokens().items()):
                tokens.add_metric([service, kind], n)
            for service, usd in sorted(stats.cost_usd().items()):
                cost.add_metric([service], usd)
            in_flight.add_metric([], stats.in_flight())
            pending.add_metric([], stats.usage_pending_rows())
            lag.add_metric([], stats.usage_lag_seconds())
            failures.add_metric([], stats.usage_flush_failures())
        yield from (requests, refusals, tokens, cost, in_flight, pending, lag, failures)

    def _stored(self) -> Iterator[Metric]:
        vault = self.app[VAULT]
        credentials = GaugeMetricFamily(
            "vaultd_credentials", "Stored credentials, by service", labels=["service"]
        )
        # Every configured service, with none too; then any stored for a service
        # no longer configured (its name came from the config once).
        counts = Counter(c.service for c in vault.credentials.list())
        services = list(self.app[LIVE_CONFIG].config.services)
        services += sorted(set(counts) - set(services))
        for service in services:
            credentials.add_metric([service], counts[service])
        sessions = GaugeMetricFamily(
            "vaultd_sessions_active", "Sessions neither revoked nor expired"
        )
        sessions.add_metric([], vault.sessions.count_active(now()))
        yield from (credentials, sessions)


def render(app: web.Application) -> bytes:
    """The text exposition of ``app``'s series, from a registry of its own."""
    registry = CollectorRegistry()
    registry.register(VaultdCollector(app))
    return generate_latest(registry)
