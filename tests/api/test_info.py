"""``/healthz``, ``/api/services``, and the OpenAPI document kept true to the app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.http import Mint, bearer, problem
from vaultd import __version__
from vaultd.api.openapi import openapi_document
from vaultd.config import Config
from vaultd.core.vault import Vault
from vaultd.daemon.app import create_app

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def routed(config: Config) -> set[tuple[str, str]]:
    app = create_app(config)
    pairs = set()
    for route in app.router.routes():
        assert route.resource is not None
        # A route for any method ("*") must document each method OpenAPI knows.
        methods = METHODS if route.method == "*" else {route.method.lower()}
        pairs |= {(m.upper(), route.resource.canonical) for m in methods}
    return pairs


def test_openapi_matches_the_routes(api_config: Config) -> None:
    assert routed(api_config) == documented()


def test_openapi_document_is_well_formed() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == __version__
    schemas = doc["components"]["schemas"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in doc["components"][kind], ref
    assert set(schemas) >= {"Credential", "Session", "Problem"}
    operation_ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(operation_ids) == len(set(operation_ids))


def _operations(scope: str) -> list[tuple[str, str]]:
    doc = openapi_document()
    return sorted(
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS and op["x-vaultd-scope"] == scope
    )


async def _call(
    client: TestClient[Any, Any], method: str, path: str, ids: dict[str, str], token: str | None
) -> int:
    url = path.replace("{id}", ids["/api/sessions" if "sessions" in path else "/api/credentials"])
    headers = bearer(token) if token else {}
    body = {"name": "scope-probe"} if method in ("POST", "PATCH") else None
    response = await client.request(method, url, json=body, headers=headers)
    return response.status


@pytest.fixture
def ids(api_vault: Vault, mint: Mint) -> dict[str, str]:
    credential = api_vault.credentials.add(
        api_vault.unlock(), service="openai", name="probe", secret="sk-probe-secret-value-0000"
    )
    session = api_vault.sessions.authenticate(mint("read"))
    return {"/api/credentials": credential.id, "/api/sessions": session.id}


@pytest.mark.parametrize(("scope", "lacking"), [("read", ("proxy",)), ("admin", ("read", "proxy"))])
async def test_documented_scope_is_enforced(
    api_client: TestClient[Any, Any],
    mint: Mint,
    ids: dict[str, str],
    scope: str,
    lacking: tuple[str, ...],
) -> None:
    operations = _operations(scope)
    assert operations
    for method, path in operations:
        assert await _call(api_client, method, path, ids, None) == 401, (method, path)
        assert await _call(api_client, method, path, ids, mint(*lacking)) == 403, (method, path)
        allowed = await _call(api_client, method, path, ids, mint(scope))
        assert allowed not in (401, 403), (method, path, allowed)
    # admin does everything a narrower scope allows.
    for method, path in operations:
        assert await _call(api_client, method, path, ids, mint("admin")) not in (401, 403)


async def test_unauthenticated_operations(api_client: TestClient[Any, Any]) -> None:
    operations = _operations("none")
    assert operations == [
        ("GET", "/api/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/ui"),
        ("GET", "/ui/"),
        ("GET", "/ui/{asset}"),
    ]
    for method, path in operations:
        # /ui redirects to the page; an asset is one of the page's files.
        response = await api_client.request(method, path.replace("{asset}", "app.js"))
        assert response.status == 200


async def test_healthz_reveals_nothing_else(api_client: TestClient[Any, Any]) -> None:
    response = await api_client.get("/healthz")
    assert await response.json() == {"status": "ok", "version": __version__}
    assert response.headers["Server"] == "vaultd"


async def test_openapi_endpoint_serves_the_document(api_client: TestClient[Any, Any]) -> None:
    response = await api_client.get("/api/openapi.json")
    assert await response.json() == openapi_document()


async def test_services(
    api_client: TestClient[Any, Any], api_vault: Vault, api_config: Config, mint: Mint
) -> None:
    for name in ("a", "b"):
        api_vault.credentials.add(
            api_vault.unlock(), service="openai", name=name, secret=f"sk-secret-{name}-0123456789"
        )
    response = await api_client.get("/api/services", headers=bearer(mint("read")))
    assert response.status == 200
    items = await response.json()
    assert [i["name"] for i in items] == list(api_config.services)
    by_name = {i["name"]: i for i in items}
    assert by_name["openai"] == {
        "name": "openai",
        "base_url": "https://api.openai.com",
        "auth": "bearer",
        "credential_count": 2,
    }
    assert by_name["anthropic"]["auth"] == "header"
    assert by_name["local"]["base_url"] == "http://127.0.0.1:9"
    assert all(i["credential_count"] == 0 for n, i in by_name.items() if n != "openai")
    assert "sk-secret" not in await response.text()


async def test_services_needs_read(api_client: TestClient[Any, Any], mint: Mint) -> None:
    await problem(await api_client.get("/api/services"), 401, "unauthorized")
    response = await api_client.get("/api/services", headers=bearer(mint("proxy")))
    await problem(response, 403, "forbidden")
