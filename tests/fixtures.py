"""Fixtures: a vault under tmp_path and the API on real sockets; a fake upstream and the proxy.

Loaded for every test module by ``pytest_plugins`` in tests/conftest.py; test
modules import helpers from tests/support/ and never this module, which
pytest must import itself (to rewrite its asserts). The app under test opens its own
connection to the same database file as ``api_vault``, as the daemon and the
CLI do, so a change made through the store is seen by the very next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from tests.support.config import write_api_config
from tests.support.http import Mint, mint_token, start_client
from tests.support.upstream import (
    Proxy,
    Seen,
    StartUpstream,
    Upstream,
    proxy_in_front_of,
    upstream_app,
)
from vaultd.config import Config
from vaultd.core.sessions import DEFAULT_SCOPES
from vaultd.core.vault import Vault, init_vault


@pytest.fixture
def api_config(tmp_path: Path) -> Config:
    return write_api_config(tmp_path)


@pytest.fixture
def api_vault(api_config: Config) -> Iterator[Vault]:
    vault, _ = init_vault(api_config)
    try:
        yield vault
    finally:
        vault.close()


@pytest.fixture
async def api_client(
    aiohttp_client: AiohttpClient, api_config: Config, api_vault: Vault
) -> TestClient[Any, Any]:
    return await start_client(aiohttp_client, api_config)


@pytest.fixture
def mint(api_vault: Vault, api_config: Config) -> Mint:
    """``mint("read", "admin", services=["openai"], ttl=60)`` -> a fresh token."""

    def make(*scopes: str, services: tuple[str, ...] = ("*",), ttl: int | None = 3600) -> str:
        chosen = list(scopes) or list(DEFAULT_SCOPES)
        return mint_token(api_vault, api_config, scopes=chosen, services=list(services), ttl=ttl)

    return make


@pytest.fixture
async def start_upstream(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> StartUpstream:
    async def start(**kw: Any) -> Upstream:
        seen: list[Seen] = []
        # No access log: the fake upstream logs the URLs it gets, keys included,
        # and the log tests are about what vaultd logs.
        server = await aiohttp_server(upstream_app(seen, **kw), host="127.0.0.1", access_log=None)
        return Upstream(server, seen)

    return start


@pytest.fixture
async def proxy(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> Proxy:
    bystander = await start_upstream()
    upstream = await start_upstream(other_url=bystander.url)
    return await proxy_in_front_of(upstream, bystander, tmp_path, aiohttp_client)
