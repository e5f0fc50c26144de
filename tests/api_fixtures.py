"""Fixtures for the HTTP API tests: a vault under tmp_path and a client on real sockets.

Loaded for every test module by ``pytest_plugins`` in tests/conftest.py; test
modules import helpers from tests/api_helpers.py and never this module, which
pytest must import itself (to rewrite its asserts). The app under test opens its own
connection to the same database file as ``api_vault``, as the daemon and the
CLI do, so a change made through the store is seen by the very next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.api_helpers import Mint, start_client, write_config
from vaultd.config import Config
from vaultd.core.vault import Vault, init_vault


@pytest.fixture
def api_config(tmp_path: Path) -> Config:
    return write_config(tmp_path)


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
        _, token = api_vault.sessions.create(
            name="test",
            scopes=list(scopes) or ["read", "proxy"],
            services=list(services),
            ttl=ttl,
            known_services=api_config.services,
        )
        return token

    return make
