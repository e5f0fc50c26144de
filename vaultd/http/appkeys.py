"""Typed keys for what the application and each request carry.

Kept apart from ``app.py`` so that handlers, middlewares and the auth helpers
can import them without importing the app factory (which imports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from vaultd.config import Config, LiveConfig
from vaultd.core.sessions import Session, Used
from vaultd.core.vault import Vault


class LiveUse(Protocol):
    """What the proxy has counted and not yet written (``proxy.counters.Counters``)."""

    def session_used(self, session_id: str) -> Used | None: ...

    def credential_used_today(self, credential_id: str) -> Used | None: ...


class ProxyStats(Protocol):
    """What the proxy has done since start, read by ``GET /metrics`` at scrape time.

    Keys are configured service names, status codes and refusal slugs only.
    """

    def requests(self) -> Mapping[tuple[str, int], int]:
        """(service, status) -> requests audited."""
        ...

    def refusals(self) -> Mapping[tuple[str, str, str], int]:
        """(service, reason slug, limit or "") -> requests refused before going upstream."""
        ...

    def tokens(self) -> Mapping[tuple[str, str], int]:
        """(service, kind: input, output or cached_input) -> tokens."""
        ...

    def cost_usd(self) -> Mapping[str, float]:
        """service -> USD of the priced answers."""
        ...

    def in_flight(self) -> int: ...

    def usage_pending_rows(self) -> int: ...

    def usage_lag_seconds(self) -> float: ...

    def usage_flush_failures(self) -> int: ...


# The config the app was built with: what only a restart changes (where it
# listens, the data dir) and what is built once at start reads this one.
CONFIG = web.AppKey("config", Config)
# The config as of the last reload (SIGHUP): what requests read.
LIVE_CONFIG = web.AppKey("live_config", LiveConfig)
# Set by the vault cleanup context for the life of the running app only.
VAULT = web.AppKey("vault", Vault)

# Set by the proxy's cleanup context: the API reads live use through it.
LIVE_USE = web.AppKey("live_use", LiveUse)
# Set by the proxy's cleanup context too: what GET /metrics reports.
PROXY_STATS = web.AppKey("proxy_stats", ProxyStats)

REQUEST_ID = web.RequestKey("request_id", str)
# The authenticated session, once a handler has checked the token.
SESSION = web.RequestKey("session", Session)
