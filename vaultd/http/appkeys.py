"""Typed keys for what the application and each request carry.

Kept apart from ``app.py`` so that handlers, middlewares and the auth helpers
can import them without importing the app factory (which imports them).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from vaultd.config import Config, LiveConfig
from vaultd.core.sessions import Session, Used
from vaultd.core.vault import Vault


class LiveUse(Protocol):
    """What the proxy has counted and not yet written (``proxy.counters.Counters``)."""

    def session_used(self, session_id: str) -> Used | None: ...

    def credential_used_today(self, credential_id: str) -> Used | None: ...


# The config the app was built with: what only a restart changes (where it
# listens, the data dir) and what is built once at start reads this one.
CONFIG = web.AppKey("config", Config)
# The config as of the last reload (SIGHUP): what requests read.
LIVE_CONFIG = web.AppKey("live_config", LiveConfig)
# Set by the vault cleanup context for the life of the running app only.
VAULT = web.AppKey("vault", Vault)

# Set by the proxy's cleanup context: the API reads live use through it.
LIVE_USE = web.AppKey("live_use", LiveUse)

REQUEST_ID = web.RequestKey("request_id", str)
# The authenticated session, once a handler has checked the token.
SESSION = web.RequestKey("session", Session)
