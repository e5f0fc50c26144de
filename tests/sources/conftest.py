"""Fixtures for the remote-source tests: a real OpenBao server on 127.0.0.1.

- ``bao_server`` (session): one shared ``bao server -dev``, approle enabled,
  file audit device on. Not to be sealed or stopped.
- ``bao`` (function): a tenant on the shared server: its own KV v2 mount
  (``kv1``, ``kv2``, ...), reader policy, AppRole role and secret_id file.
  Cheap (a few ms); ``seal``/``stop`` on it raise.
- ``bao_exclusive`` (function): its own dev server (~0.2 s up, ~0.5 s down),
  mount ``secret``: may be sealed, unsealed and stopped (not started again:
  a dev server's data lives in memory).
- ``bao_persistent`` (function): its own raft-backed server (~2 s up), mount
  ``secret``: sealed, stopped, killed, started again with its data, tokens
  and secret_ids intact.

Without ``bao`` these tests skip, except under ``CI=true``, where they fail.
Helpers: tests/support/openbao.py (the server) and tests/support/sources.py (the daemon).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.openbao import BaoServer, BaoTenant, require_bao
from tests.support.sources import MakeClient, MakeServer, Rig, source_table, start_rig


@pytest.fixture(scope="session")
def bao_binary() -> str:
    return require_bao()


@pytest.fixture(scope="session")
def bao_server(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer(bao_binary, tmp_path_factory.mktemp("bao-shared"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def bao(bao_server: BaoServer, tmp_path: Path) -> BaoTenant:
    return bao_server.tenant(tmp_path, exclusive=False)


def _own_server(binary: str, tmp_path: Path, *, persistent: bool) -> Iterator[BaoTenant]:
    server = BaoServer(binary, tmp_path / "bao", persistent=persistent)
    try:
        server.start()
        yield server.tenant(tmp_path, mount="secret", exclusive=True)
    finally:
        server.close()


@pytest.fixture
def bao_exclusive(bao_binary: str, tmp_path: Path) -> Iterator[BaoTenant]:
    yield from _own_server(bao_binary, tmp_path, persistent=False)


@pytest.fixture
def bao_persistent(bao_binary: str, tmp_path: Path) -> Iterator[BaoTenant]:
    yield from _own_server(bao_binary, tmp_path, persistent=True)


@pytest.fixture
def rig(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> Callable[..., Awaitable[Rig]]:
    """``await rig(bao, refresh="1s", max_stale="1h")``: a daemon reading ``bao``."""

    async def make(bao: BaoTenant, **table: str) -> Rig:
        return await start_rig(tmp_path, source_table(bao, **table), aiohttp_server, aiohttp_client)

    return make
