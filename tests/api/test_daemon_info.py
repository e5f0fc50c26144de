"""``GET /api/daemon`` and what a config reload changes for the API (issue 17, item 3)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.http import Mint, bearer
from vaultd import __version__
from vaultd.config import Config, config_digest, load_config
from vaultd.daemon.reload import reload_app


async def daemon(client: TestClient[Any, Any], token: str) -> dict[str, Any]:
    response = await client.get("/api/daemon", headers=bearer(token))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_any_token_learns_only_its_own_services(
    api_client: TestClient[Any, Any], api_config: Config, mint: Mint
) -> None:
    assert (await api_client.get("/api/daemon")).status == 401
    proxy_only = mint("proxy", services=("openai", "local"))
    assert await daemon(api_client, proxy_only) == {
        "version": __version__,
        "services": ["local", "openai"],  # in the registry's order
        "config_digest": None,
        "pending_restart": None,
    }
    body = await daemon(api_client, mint("read"))
    assert body["services"] == list(api_config.services)
    assert body["config_digest"] == config_digest(api_config)
    assert body["pending_restart"] == []


async def test_a_reload_reaches_the_api_and_the_guard(
    api_client: TestClient[Any, Any], api_config: Config, mint: Mint
) -> None:
    admin = mint("admin")
    assert api_config.config_file is not None
    foreign = {"Host": "vaultd.test"}
    assert (await api_client.get("/healthz", headers=foreign)).status == 403
    text = api_config.config_file.read_text()
    api_config.config_file.write_text(
        text
        + '[sessions]\ndefault_ttl = "2h"\n[server]\nallowed_hosts = ["vaultd.test"]\n'
        + '[services.newapi]\nbase_url = "http://127.0.0.1:9"\n'
    )
    assert reload_app(api_client.app)

    assert (await api_client.get("/healthz", headers=foreign)).status == 200
    created = await api_client.post("/api/sessions", json={"name": "x"}, headers=bearer(admin))
    session = await created.json()
    assert session["expires_at"] - session["created_at"] == 2 * 3600
    body = {"service": "newapi", "name": "k", "secret": "sk-newapi-secret-value-000001"}
    added = await api_client.post("/api/credentials", json=body, headers=bearer(admin))
    assert added.status == 201, await added.text()
    info = await daemon(api_client, admin)
    assert "newapi" in info["services"]
    assert info["config_digest"] == config_digest(load_config(str(api_config.config_file)))

    # A broken file changes nothing.
    api_config.config_file.write_text(text + "[sessions]\ndefault_ttl = 5\nmax_ttl = 1\n")
    assert not reload_app(api_client.app)
    assert (await daemon(api_client, admin))["config_digest"] == info["config_digest"]
    assert (await api_client.get("/healthz", headers=foreign)).status == 200


async def test_keys_only_a_restart_applies_are_kept_and_named(
    api_client: TestClient[Any, Any], api_config: Config, mint: Mint
) -> None:
    assert api_config.config_file is not None
    api_config.config_file.write_text(
        api_config.config_file.read_text()
        + '[server]\nport = 4001\nidle_timeout = "5s"\n[audit]\nmax_rows = 10\n'
    )
    assert reload_app(api_client.app)
    info = await daemon(api_client, mint("read"))
    assert info["pending_restart"] == ["[server] port", "[server] idle_timeout"]
    # What the daemon runs with is not what the file says: doctor will tell.
    assert info["config_digest"] != config_digest(load_config(str(api_config.config_file)))
