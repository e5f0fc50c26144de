"""Typed keys for what the application and each request carry.

Kept apart from ``app.py`` so that handlers, middlewares and the auth helpers
can import them without importing the app factory (which imports them).
"""

from __future__ import annotations

from aiohttp import web

from vaultd.config import Config
from vaultd.core.sessions import Session
from vaultd.core.vault import Vault

CONFIG = web.AppKey("config", Config)
# Set by the vault cleanup context for the life of the running app only.
VAULT = web.AppKey("vault", Vault)

REQUEST_ID = web.RequestKey("request_id", str)
# The authenticated session, once a handler has checked the token.
SESSION = web.RequestKey("session", Session)
