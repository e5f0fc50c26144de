"""One shape for every error (DESIGN 5): RFC 9457 problem+json with ``error`` too.

Each kind of error the API can return is produced here through a real socket
and its body pinned field by field, so a change to the shape is a deliberate
change to this file.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.support.http import (
    PROBLEM_FIELDS,
    Mint,
    bearer,
    fast_server_only,
    problem,
    raw_http,
    start_client,
)
from vaultd.config import Config
from vaultd.daemon.app import create_app
from vaultd.errors import StorageError

SECRET = "sk-shape-test-0123456789abcdef"
ADMIN_JSON = {"Content-Type": "application/json"}


async def _admin(mint: Mint) -> dict[str, str]:
    return {**bearer(mint("admin")), **ADMIN_JSON}


async def test_400_malformed_json(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.post("/api/sessions", data=b"{", headers=await _admin(mint))
    body = await problem(response, 400, "malformed-request")
    assert set(body) == PROBLEM_FIELDS
    assert body["title"] == "Malformed request"
    assert body["detail"] == "the body is not valid JSON"


async def test_400_a_field_named_twice(api_client: TestClient[Any, Any], mint: Mint) -> None:
    """Last-wins here, first-wins elsewhere: a body two readers read two ways is refused."""
    for body in (
        b'{"name": "a", "name": "b"}',
        b'{"name": "a", "scopes": ["read"], "ttl": "1h", "ttl": "never"}',
        b'{"name": "a", "meta": {"k": 1, "k": 2}}',  # nested objects too
    ):
        response = await api_client.post("/api/sessions", data=body, headers=await _admin(mint))
        problem_body = await problem(response, 400, "malformed-request")
        assert problem_body["detail"] == "the body names a field twice in one object"
    listed = await api_client.get("/api/sessions", headers=await _admin(mint))
    assert {s["name"] for s in await listed.json()} == {"test"}  # only the minted ones


@fast_server_only
async def test_400_unparseable_http(api_client: TestClient[Any, Any]) -> None:
    port = api_client.port
    assert port is not None
    status, headers, raw = await raw_http(
        "127.0.0.1",
        port,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x01b\r\nConnection: close\r\n\r\n",
    )
    assert status == 400
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["x-request-id"]
    assert b'"type": "https://vaultd.dev/problems/bad-request"' in raw
    assert b'"error": "the request is not valid HTTP/1.1"' in raw


async def test_401_missing_token(api_client: TestClient[Any, Any]) -> None:
    response = await api_client.get("/api/credentials")
    body = await problem(response, 401, "unauthorized")
    assert set(body) == PROBLEM_FIELDS
    assert body["title"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer fn_sess_" + "A" * 43,  # well-formed, unknown
        "Bearer fn_sess_short",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "fn_sess_" + "A" * 43,
        "Bearer " + "x" * 5000,
    ],
)
async def test_401_bad_token(api_client: TestClient[Any, Any], authorization: str) -> None:
    response = await api_client.get("/api/credentials", headers={"Authorization": authorization})
    body = await problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "fn_sess_AAAA" not in body["detail"]


async def test_403_scope(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.post(
        "/api/sessions", json={"name": "x"}, headers=bearer(mint("read"))
    )
    body = await problem(response, 403, "forbidden")
    assert set(body) == PROBLEM_FIELDS
    assert body["detail"] == "this token does not have the 'admin' scope"


async def test_403_host_and_origin(api_client: TestClient[Any, Any]) -> None:
    host = await problem(
        await api_client.get("/healthz", headers={"Host": "evil.example"}), 403, "forbidden-host"
    )
    origin = await problem(
        await api_client.get("/healthz", headers={"Origin": "null"}), 403, "forbidden-origin"
    )
    assert set(host) == set(origin) == PROBLEM_FIELDS


async def test_404_route_and_resource(api_client: TestClient[Any, Any], mint: Mint) -> None:
    route = await problem(await api_client.get("/api/nothing"), 404, "not-found")
    assert set(route) == PROBLEM_FIELDS
    missing = str(uuid.uuid4())
    resource = await problem(
        await api_client.get(f"/api/credentials/{missing}", headers=bearer(mint("read"))),
        404,
        "not-found",
    )
    assert resource["detail"] == f"no credential with id {missing}"


async def test_405_with_allow(api_client: TestClient[Any, Any]) -> None:
    response = await api_client.put("/api/credentials")
    body = await problem(response, 405, "method-not-allowed")
    assert set(body) == PROBLEM_FIELDS
    assert response.headers["Allow"] == "GET, POST"


async def test_409_names_the_conflicting_resource(
    api_client: TestClient[Any, Any], mint: Mint
) -> None:
    headers = await _admin(mint)
    payload = {"service": "openai", "name": "main", "secret": SECRET}
    first = await api_client.post("/api/credentials", json=payload, headers=headers)
    assert first.status == 201
    existing = (await first.json())["id"]
    response = await api_client.post("/api/credentials", json=payload, headers=headers)
    body = await problem(response, 409, "conflict")
    assert set(body) == PROBLEM_FIELDS | {"conflicting_resource_id"}
    assert body["conflicting_resource_id"] == existing


async def test_413_body_too_large(api_client: TestClient[Any, Any], mint: Mint) -> None:
    huge = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await api_client.post(
        "/api/sessions", data=io.BytesIO(huge), headers=await _admin(mint)
    )
    body = await problem(response, 413, "payload-too-large")
    assert set(body) == PROBLEM_FIELDS


async def test_415_not_json(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.post(
        "/api/sessions",
        data=b"name=x",
        headers={**bearer(mint("admin")), "Content-Type": "text/plain"},
    )
    body = await problem(response, 415, "unsupported-media-type")
    assert set(body) == PROBLEM_FIELDS


async def test_422_lists_every_field(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.post(
        "/api/credentials",
        json={"service": "no such!", "name": "", "secret": SECRET, "metadata": {"a": 1}},
        headers=await _admin(mint),
    )
    body = await problem(response, 422, "validation-error")
    assert set(body) == PROBLEM_FIELDS | {"errors"}
    assert body["title"] == "Validation failed"
    pointers = [e["pointer"] for e in body["errors"]]
    assert pointers == ["/service", "/name", "/metadata/a"]
    assert all(set(e) == {"pointer", "message"} and e["message"] for e in body["errors"])


def _with_route(config: Config, handler: Any) -> web.Application:
    app = create_app(config)
    app.router.add_get("/api/boom", handler)
    return app


async def test_500_reveals_nothing(
    aiohttp_client: AiohttpClient,
    api_config: Config,
    api_vault: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "fn_sess_" + "S" * 43

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"bug while holding {SECRET} and {token}")

    client = await start_client(aiohttp_client, api_config, _with_route(api_config, boom))
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/api/boom")
    body = await problem(response, 500, "internal-error")
    assert set(body) == PROBLEM_FIELDS
    assert body["request_id"] in body["detail"]
    text = await response.text()
    logged = caplog.text
    assert "RuntimeError" in logged and body["request_id"] in logged
    for leak in (SECRET, token, "bug while holding sk-"):
        assert leak not in text
        assert leak not in logged


async def test_503_vault_errors_hide_paths(
    aiohttp_client: AiohttpClient,
    api_config: Config,
    api_vault: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise StorageError(f"database {api_config.key_file} is corrupt")

    client = await start_client(aiohttp_client, api_config, _with_route(api_config, broken))
    with caplog.at_level(logging.INFO):
        response = await client.get("/api/boom")
    body = await problem(response, 503, "vault-unavailable")
    assert set(body) == PROBLEM_FIELDS
    assert str(api_config.key_file) not in await response.text()
    # The operator still learns what happened.
    assert str(api_config.key_file) in caplog.text


async def test_error_mid_stream_drops_the_connection(
    aiohttp_client: AiohttpClient, api_config: Config, api_vault: Any
) -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"partial ")
        raise RuntimeError("upstream went away")

    client = await start_client(aiohttp_client, api_config, _with_route(api_config, half))
    response = await client.get("/api/boom")
    assert response.status == 200
    # The body is cut short, never a problem document glued onto half a stream.
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
