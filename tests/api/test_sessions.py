"""``/api/sessions`` and token checks through a real socket (threat T4)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.http import Mint, bearer, problem
from vaultd.config import Config
from vaultd.core.vault import Vault
from vaultd.models import now
from vaultd.tokens import TOKEN_RE

SESSION_SHAPE = {
    "id",
    "name",
    "key_prefix",
    "scopes",
    "services",
    "status",
    "created_at",
    "last_used_at",
    "expires_at",
    "limits",
    "used",
    "policy",
}


async def create(
    client: TestClient[Any, Any], token: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/sessions", json=body, headers=bearer(token))
    data: dict[str, Any] = await response.json(content_type=None)
    return response.status, data


async def test_create_returns_the_token_once(
    api_client: TestClient[Any, Any], api_vault: Vault, api_config: Config, mint: Mint
) -> None:
    admin = mint("admin")
    status, created = await create(api_client, admin, {"name": "my-script"})
    assert status == 201, created
    assert set(created) == SESSION_SHAPE | {"token"}
    token = created["token"]
    assert TOKEN_RE.fullmatch(token)
    assert created["key_prefix"] == token[:12]
    assert created["scopes"] == ["read", "proxy"]
    assert created["services"] == ["*"]
    assert created["status"] == "active"
    assert created["expires_at"] - created["created_at"] == api_config.default_ttl
    # The new token works, and no listing ever shows it again.
    listing = await api_client.get("/api/sessions", headers=bearer(token))
    assert listing.status == 200
    text = await listing.text()
    assert token not in text and admin not in text
    items = await listing.json()
    assert all(set(i) == SESSION_SHAPE for i in items)
    assert created["id"] in [i["id"] for i in items]
    assert api_vault.sessions.authenticate(token).id == created["id"]


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("90s", 90), ("8h", 8 * 3600), ("1h30m", 5400), (3600, 3600), ("never", None)],
)
async def test_ttl_forms(
    api_client: TestClient[Any, Any], mint: Mint, ttl: object, seconds: int | None
) -> None:
    status, created = await create(api_client, mint("admin"), {"name": "t", "ttl": ttl})
    assert status == 201, created
    if seconds is None:
        assert created["expires_at"] is None
    else:
        assert created["expires_at"] - created["created_at"] == seconds


async def test_scopes_and_services(api_client: TestClient[Any, Any], mint: Mint) -> None:
    status, created = await create(
        api_client,
        mint("admin"),
        {"name": "t", "scopes": ["proxy"], "services": ["openai", "local", "openai"]},
    )
    assert status == 201, created
    assert created["scopes"] == ["proxy"]
    assert created["services"] == ["openai", "local"]


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({}, ["/name"]),
        ({"name": ""}, ["/name"]),
        ({"name": "x" * 256}, ["/name"]),
        ({"name": "a\x1bb"}, ["/name"]),
        ({"name": 5}, ["/name"]),
        ({"name": "t", "token": "fn_sess_" + "A" * 43}, ["/token"]),
        ({"name": "t", "scopes": []}, ["/scopes"]),
        ({"name": "t", "scopes": "admin"}, ["/scopes"]),
        ({"name": "t", "scopes": ["root"]}, ["/scopes/0"]),
        ({"name": "t", "services": ["nosuch"]}, ["/services/0"]),
        ({"name": "t", "services": ["openai", "../x"]}, ["/services/1"]),
        ({"name": "t", "services": []}, ["/services"]),
        ({"name": "t", "ttl": "366d"}, ["/ttl"]),
        ({"name": "t", "ttl": 400 * 86400}, ["/ttl"]),
        ({"name": "t", "ttl": 0}, ["/ttl"]),
        ({"name": "t", "ttl": -5}, ["/ttl"]),
        ({"name": "t", "ttl": "0s"}, ["/ttl"]),
        ({"name": "t", "ttl": "forever"}, ["/ttl"]),
        ({"name": "t", "ttl": None}, ["/ttl"]),
        ({"name": "t", "ttl": True}, ["/ttl"]),
        ({"name": "t", "ttl": 1.5}, ["/ttl"]),
        ({"name": "", "scopes": ["x"], "ttl": "x"}, ["/name", "/scopes/0", "/ttl"]),
    ],
)
async def test_create_validation(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    body: dict[str, Any],
    pointers: list[str],
) -> None:
    admin = mint("admin")
    response = await api_client.post("/api/sessions", json=body, headers=bearer(admin))
    problem_body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in problem_body["errors"]] == pointers
    assert "fn_sess_AAAA" not in await response.text()
    assert len(api_vault.sessions.list()) == 1  # only the admin's own


async def test_revoke_by_admin_and_by_itself(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    admin = mint("admin")
    victim = mint("read")
    victim_id = api_vault.sessions.authenticate(victim).id
    response = await api_client.delete(f"/api/sessions/{victim_id}", headers=bearer(admin))
    assert response.status == 204
    await problem(
        await api_client.get("/api/sessions", headers=bearer(victim)), 401, "unauthorized"
    )
    # Revoking twice is not an error; an unknown id is.
    again = await api_client.delete(f"/api/sessions/{victim_id}", headers=bearer(admin))
    assert again.status == 204
    for unknown in (str(uuid.uuid4()), "nope"):
        missing = await api_client.delete(f"/api/sessions/{unknown}", headers=bearer(admin))
        await problem(missing, 404, "not-found")

    own = mint("proxy")
    own_id = api_vault.sessions.authenticate(own).id
    response = await api_client.delete(f"/api/sessions/{own_id}", headers=bearer(own))
    assert response.status == 204
    assert api_vault.sessions.get(own_id).status() == "revoked"


async def test_non_admin_cannot_revoke_others(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    other_id = api_vault.sessions.authenticate(mint("admin")).id
    reader = mint("read", "proxy")
    for target in (other_id, str(uuid.uuid4()), "nope"):
        response = await api_client.delete(f"/api/sessions/{target}", headers=bearer(reader))
        # The same answer whether the id exists or not.
        await problem(response, 403, "forbidden")
    assert api_vault.sessions.get(other_id).status() == "active"


async def test_revoked_elsewhere_fails_on_the_next_request(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    token = mint("read")
    headers = bearer(token)
    assert (await api_client.get("/api/credentials", headers=headers)).status == 200
    # As `vaultd session revoke` does from another process: the same file, not the app.
    api_vault.sessions.revoke(api_vault.sessions.authenticate(token).id)
    body = await problem(
        await api_client.get("/api/credentials", headers=headers), 401, "unauthorized"
    )
    assert body["detail"] == "the token is revoked"


async def test_expired_token_gets_401(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    token = mint("read", ttl=3600)
    headers = bearer(token)
    assert (await api_client.get("/api/credentials", headers=headers)).status == 200
    session_id = api_vault.sessions.authenticate(token).id
    with api_vault.db.conn:
        api_vault.db.execute(
            "UPDATE sessions SET expires_at = ? WHERE id = ?", [now() - 1, session_id]
        )
    response = await api_client.get("/api/credentials", headers=headers)
    body = await problem(response, 401, "unauthorized")
    assert body["detail"] == "the token is expired"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["bearer {t}", "BEARER {t}", "Bearer  {t}", "Bearer {t} "],
)
async def test_bearer_scheme_is_case_insensitive(
    api_client: TestClient[Any, Any], mint: Mint, authorization: str
) -> None:
    header = {"Authorization": authorization.format(t=mint("read"))}
    assert (await api_client.get("/api/sessions", headers=header)).status == 200


async def test_token_is_not_accepted_elsewhere(
    api_client: TestClient[Any, Any], mint: Mint
) -> None:
    # Only /proxy takes a token from an SDK's own header; the API wants Bearer.
    token = mint("admin")
    for headers in ({"x-api-key": token}, {"Cookie": f"token={token}"}):
        response = await api_client.get("/api/sessions", headers=headers)
        await problem(response, 401, "unauthorized")
    response = await api_client.get(f"/api/sessions?token={token}")
    await problem(response, 401, "unauthorized")
