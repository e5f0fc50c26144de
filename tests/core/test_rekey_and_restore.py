"""After rekey, and from a restored backup, the proxy still injects the right key."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.config import write_proxy_config
from tests.support.http import DaemonTestServer, bearer
from tests.support.upstream import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    StartUpstream,
    Upstream,
    seed_vault,
)
from vaultd.config import Config, load_config
from vaultd.core.rekey import rekey
from vaultd.core.vault import open_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT
from vaultd.store.backup import backup_database

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


async def injected(config: Config, upstream: Upstream, aiohttp_client: MakeClient) -> list[str]:
    """The key header the upstream got for one call to openai (bearer) and anthropic (x-api-key)."""
    client = await aiohttp_client(DaemonTestServer(create_app(config), host="127.0.0.1"))
    _session, token = client.app[VAULT].sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=600, known_services=config.services
    )
    seen = []
    for service in ("openai", "anthropic"):
        resp = await client.get(f"/proxy/{service}/v1/models", headers=bearer(token))
        assert resp.status == 200, await resp.text()
        headers = upstream.seen[-1].headers
        seen.append(headers.get("Authorization") or headers.get("x-api-key", ""))
    await client.close()
    return seen


async def test_proxy_after_rekey_and_from_a_restored_backup(
    tmp_path: Path, start_upstream: StartUpstream, aiohttp_client: MakeClient
) -> None:
    upstream = await start_upstream()
    config = write_proxy_config(tmp_path / "config.toml", upstream.url)
    seed_vault(config)
    with open_vault(config) as vault:
        old_wrapped = vault.meta("wrapped_dek")
        assert rekey(vault) == 7
        assert vault.meta("wrapped_dek") != old_wrapped
        backup = tmp_path / "vault.backup"
        backup_database(vault.db, backup)

    expected = [f"Bearer {OPENAI_KEY}", ANTHROPIC_KEY]
    assert await injected(config, upstream, aiohttp_client) == expected

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir(mode=0o700)
    # Like cp(1): the 0600 mode comes along.
    shutil.copy(backup, restored_dir / "vault.db")
    restored = load_config(config_path=str(tmp_path / "config.toml"), data_dir=str(restored_dir))
    assert restored.db_path == restored_dir / "vault.db"
    assert await injected(restored, upstream, aiohttp_client) == expected
