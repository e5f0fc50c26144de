"""The aiohttp application: routes, middlewares, and the vault's lifetime.

``create_app`` does no I/O, so tests and ``serve`` can build it freely; the
vault is opened on startup (initialised first on a fresh machine) and closed
on cleanup, in one ``cleanup_ctx`` generator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from vaultd.api import audit as api_audit
from vaultd.api import credentials as api_credentials
from vaultd.api import info as api_info
from vaultd.api import sessions as api_sessions
from vaultd.api import usage as api_usage
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.http.appkeys import CONFIG, VAULT
from vaultd.http.chain import STANDARD_CHAIN, standard_chain
from vaultd.http.middleware import standard_headers
from vaultd.proxy import routes as proxy

log = logging.getLogger("vaultd")

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


def create_app(config: Config) -> web.Application:
    chain = standard_chain(config)
    app = web.Application(middlewares=chain.middlewares, client_max_size=MAX_JSON_BODY)
    app[CONFIG] = config
    app[STANDARD_CHAIN] = chain
    app.cleanup_ctx.append(vault_context)
    app.on_response_prepare.append(standard_headers)
    # The proxy's route first: the router tries routes in order, and proxied
    # calls are the hot path.
    proxy.setup(app, expect_handler=chain.expect_handler)
    for module in (api_info, api_credentials, api_sessions, api_audit, api_usage):
        for route in module.routes:
            if not isinstance(route, web.RouteDef):  # the modules define routes only
                raise TypeError(f"{module.__name__} defines a route vaultd cannot check")
            # As app.add_routes would, with the guard before any 100 Continue.
            kwargs = {**route.kwargs, "expect_handler": chain.expect_handler}
            web.RouteDef(route.method, route.path, route.handler, kwargs).register(app.router)
    return app
