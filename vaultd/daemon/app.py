"""The aiohttp application: routes, middlewares, and the vault's lifetime.

``create_app`` does no I/O, so tests and ``serve`` can build it freely; the
vault is opened on startup (initialised first on a fresh machine) and closed
on cleanup, in one ``cleanup_ctx`` generator. While it is open, sessions
that ended longer ago than ``[sessions] keep`` are deleted now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

from aiohttp import web

from vaultd.api import audit as api_audit
from vaultd.api import credentials as api_credentials
from vaultd.api import info as api_info
from vaultd.api import metrics as api_metrics
from vaultd.api import sessions as api_sessions
from vaultd.api import ui as api_ui
from vaultd.api import usage as api_usage
from vaultd.config import Config, LiveConfig
from vaultd.core.vault import Vault, init_vault
from vaultd.errors import VaultdError
from vaultd.http.appkeys import CONFIG, LIVE_CONFIG, VAULT
from vaultd.http.chain import STANDARD_CHAIN, standard_chain
from vaultd.http.middleware import standard_headers
from vaultd.models import now
from vaultd.proxy import routes as proxy
from vaultd.sources.auth import check_files
from vaultd.sources.source import SOURCES, Sources
from vaultd.units import format_duration

log = logging.getLogger("vaultd")

# The modules whose routes the app serves besides the proxy's (api_ui: the page).
API_MODULES = (api_info, api_credentials, api_sessions, api_audit, api_usage, api_metrics, api_ui)

# JSON bodies of this API are a few KiB at most; the proxy streams its bodies
# and enforces [proxy] max_request_body itself (client_max_size does not apply
# to streamed reads).
MAX_JSON_BODY = 1024 * 1024


async def vault_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    vault, created = init_vault(config)
    try:
        # Unlocked now so that a wrong key fails the start, not the first request.
        vault.unlock()
        if created:
            log.info("initialised a new vault in %s", config.data_dir)
    except BaseException:
        vault.close()
        raise
    app[VAULT] = vault
    try:
        yield
    finally:
        vault.close()


async def sources_context(app: web.Application) -> AsyncIterator[None]:
    """The remote sources (DESIGN 13): their files checked now (a secret_id file
    open to others fails the start), then read in the background; a server
    that is down does not hold the start up."""
    config = app[CONFIG]
    for settings in config.sources.values():
        check_files(settings)
    live = app[LIVE_CONFIG]
    sources = Sources(config.sources, lambda: live.config.services)
    app[SOURCES] = sources
    sources.start()
    try:
        yield
    finally:
        await sources.close()


# How often ended sessions are pruned (or every [sessions] keep, if shorter):
# as often as the usage writer prunes the audit log.
PRUNE_SESSIONS_EVERY = 60


def prune_sessions(vault: Vault, keep: int) -> None:
    """Delete the sessions revoked or expired more than ``keep`` seconds ago."""
    try:
        pruned = vault.sessions.prune(now() - keep)
    except (VaultdError, sqlite3.Error) as exc:
        # A busy or damaged file: the next round tries again.
        log.warning("ended sessions not pruned, will try again: %s", exc)
        return
    if pruned:
        log.info(
            "pruned %d session%s revoked or expired more than %s ago ([sessions] keep)",
            pruned,
            "" if pruned == 1 else "s",
            format_duration(keep),
        )


async def _pruning(app: web.Application) -> None:
    while True:
        # Read each round: a reload may change it.
        keep = app[LIVE_CONFIG].config.sessions_keep
        prune_sessions(app[VAULT], keep)
        await asyncio.sleep(min(PRUNE_SESSIONS_EVERY, keep))


async def session_pruning(app: web.Application) -> AsyncIterator[None]:
    """Every ``vaultd run`` leaves a revoked session: they are kept ``[sessions] keep``."""
    task = asyncio.create_task(_pruning(app), name="vaultd-session-pruning")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(config: Config) -> web.Application:
    chain = standard_chain(config)
    app = web.Application(middlewares=chain.middlewares, client_max_size=MAX_JSON_BODY)
    app[CONFIG] = config
    app[LIVE_CONFIG] = LiveConfig(config)
    app[STANDARD_CHAIN] = chain
    app.cleanup_ctx.append(vault_context)
    app.cleanup_ctx.append(sources_context)
    app.on_response_prepare.append(standard_headers)
    # The proxy's route first: the router tries routes in order, and proxied
    # calls are the hot path.
    proxy.setup(app, expect_handler=chain.expect_handler)
    app.cleanup_ctx.append(session_pruning)
    for module in API_MODULES:
        for route in module.routes:
            if not isinstance(route, web.RouteDef):  # the modules define routes only
                raise TypeError(f"{module.__name__} defines a route vaultd cannot check")
            # As app.add_routes would, with the guard before any 100 Continue.
            kwargs = {**route.kwargs, "expect_handler": chain.expect_handler}
            web.RouteDef(route.method, route.path, route.handler, kwargs).register(app.router)
    return app
