"""Threat T3: web pages in the user's browser can neither read nor use the API.

Every test goes through a real socket to the app built by ``create_app``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.config import write_api_config
from tests.support.http import Mint, bearer, fast_server_only, problem, raw_http, start_client


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "localhost6",
        "localhost6:{port}",
        "0177.0.0.1",
        "127.1",
        "2130706433",
        "localhost.",
        "127.0.0.1.nip.io:{port}",
        "localhost:{wrong}",
        "127.0.0.1:{wrong}",
        "[::1]:{wrong}",
        "::1",
        "localhost:",
        "user@localhost",
        "",
    ],
)
async def test_foreign_host_is_refused(
    api_client: TestClient[Any, Any], mint: Mint, host: str
) -> None:
    port = api_client.port
    assert port is not None
    value = host.format(port=port, wrong=port + 1 if port < 65535 else port - 1)
    response = await api_client.get(
        "/api/credentials", headers={"Host": value, **bearer(mint("admin"))}
    )
    await problem(response, 403, "forbidden-host")
    # The route is not reached either without a token: the guard runs first.
    response = await api_client.get("/healthz", headers={"Host": value})
    await problem(response, 403, "forbidden-host")


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:{port}", "localhost:{port}", "127.0.0.1", "127.0.0.1:{port}",
     "[::1]", "[::1]:{port}"],
)  # fmt: skip
async def test_loopback_hosts_are_allowed(api_client: TestClient[Any, Any], host: str) -> None:
    response = await api_client.get("/healthz", headers={"Host": host.format(port=api_client.port)})
    assert response.status == 200, await response.text()


@fast_server_only
async def test_missing_host_is_refused(api_client: TestClient[Any, Any], mint: Mint) -> None:
    token = mint("admin")
    port = api_client.port
    assert port is not None
    # RFC 9112 3.2: an HTTP/1.1 request without Host MUST get 400 (aiohttp's
    # parser says so before routing); HTTP/1.0 has no such rule, so the
    # guard refuses it as a bad Host.
    for version, status, slug in [
        (b"HTTP/1.1", 400, b"/bad-request"),
        (b"HTTP/1.0", 403, b"/forbidden-host"),
    ]:
        code, headers, body = await raw_http(
            "127.0.0.1",
            port,
            b"GET /api/credentials " + version + b"\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert code == status, body
        assert headers["content-type"].startswith("application/problem+json")
        assert slug in body
        data = json.loads(body)
        assert data["request_id"] == headers["x-request-id"]
        assert token not in body.decode()


async def test_two_host_headers_are_refused(api_client: TestClient[Any, Any]) -> None:
    port = api_client.port
    assert port is not None
    status, _, body = await raw_http(
        "127.0.0.1",
        port,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    # Refused either by aiohttp's parser (400) or by the guard (403); never served.
    assert status in (400, 403), body
    assert b'"ok"' not in body


async def test_allowed_hosts_from_config(aiohttp_client: Any, tmp_path: Any) -> None:
    config = write_api_config(
        tmp_path, '[server]\nallowed_hosts = ["vaultd.internal", "box:8080"]\n'
    )
    client = await start_client(aiohttp_client, config)
    for host, status in [
        ("vaultd.internal", 200),
        (f"vaultd.internal:{client.port}", 200),
        ("box:8080", 200),
        ("box", 403),
        ("box:8081", 403),
        ("evil.example", 403),
    ]:
        response = await client.get("/healthz", headers={"Host": host})
        assert response.status == status, host


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1", "http://localhost:3978", ""]
)
async def test_foreign_origin_is_refused(
    api_client: TestClient[Any, Any], mint: Mint, origin: str
) -> None:
    headers = {"Origin": origin, **bearer(mint("admin"))}
    response = await api_client.get("/api/credentials", headers=headers)
    await problem(response, 403, "forbidden-origin")
    response = await api_client.post(
        "/api/sessions", json={"name": "x"}, headers={**headers, "Content-Type": "application/json"}
    )
    await problem(response, 403, "forbidden-origin")


async def test_configured_origin_is_allowed(aiohttp_client: Any, tmp_path: Any) -> None:
    config = write_api_config(tmp_path, '[server]\nallowed_origins = ["https://tool.example"]\n')
    client = await start_client(aiohttp_client, config)
    ok = await client.get("/healthz", headers={"Origin": "https://tool.example"})
    assert ok.status == 200
    # Still no CORS: the allowed origin is trusted by the server, not by browsers.
    assert not [h for h in ok.headers if h.lower().startswith("access-control-")]
    refused = await client.get("/healthz", headers={"Origin": "https://tool.example.evil"})
    await problem(refused, 403, "forbidden-origin")


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_browser_fetch_without_origin_is_refused(
    api_client: TestClient[Any, Any], site: str
) -> None:
    response = await api_client.get("/healthz", headers={"Sec-Fetch-Site": site})
    await problem(response, 403, "forbidden-origin")
    response = await api_client.get("/healthz", headers={"Sec-Fetch-Site": "none"})
    assert response.status == 200


@pytest.mark.parametrize("path", ["/api/credentials", "/api/sessions", "/healthz", "/nowhere"])
async def test_no_cors_headers_ever(
    api_client: TestClient[Any, Any], mint: Mint, path: str
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    responses = [
        await api_client.options(path, headers={"Origin": "https://evil.example", **preflight}),
        await api_client.options(path, headers=preflight),
        await api_client.get(path, headers=bearer(mint("admin"))),
    ]
    for response in responses:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        assert response.headers["X-Request-Id"]
    assert responses[0].status == 403
    # Without an Origin, OPTIONS is just a method no route has.
    if path == "/nowhere":
        assert responses[1].status == 404
    else:
        assert responses[1].status == 405
        assert "OPTIONS" not in responses[1].headers["Allow"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-seq",
        "application/json; charset=latin-1",
        None,
    ],
)
async def test_state_changing_calls_need_json(
    api_client: TestClient[Any, Any], mint: Mint, api_vault: Any, content_type: str | None
) -> None:
    token = mint("admin")
    headers = bearer(token)
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = b'{"service": "openai", "name": "n", "secret": "sk-test-secret-value-1234"}'
    for method, path in [("POST", "/api/credentials"), ("POST", "/api/sessions")]:
        response = await api_client.request(method, path, data=body, headers=headers)
        await problem(response, 415, "unsupported-media-type")
    # Refused before anything is written.
    assert api_vault.credentials.list() == []
    assert len(api_vault.sessions.list()) == 1


async def test_patch_needs_json(api_client: TestClient[Any, Any], mint: Mint) -> None:
    token = mint("admin")
    created = await api_client.post(
        "/api/credentials",
        json={"service": "openai", "name": "n", "secret": "sk-test"},
        headers=bearer(token),
    )
    assert created.status == 201
    item = await created.json()
    response = await api_client.patch(
        f"/api/credentials/{item['id']}",
        data=b'{"name": "m"}',
        headers={**bearer(token), "Content-Type": "text/plain"},
    )
    await problem(response, 415, "unsupported-media-type")


async def test_request_id_on_every_response(api_client: TestClient[Any, Any], mint: Mint) -> None:
    seen = set()
    for method, path, headers in [
        ("GET", "/healthz", {}),
        ("GET", "/api/credentials", bearer(mint("read"))),
        ("GET", "/api/credentials", {}),
        ("GET", "/nowhere", {}),
        ("DELETE", "/healthz", {}),
        ("GET", "/healthz", {"Host": "evil.example"}),
    ]:
        response = await api_client.request(method, path, headers=headers)
        request_id = response.headers["X-Request-Id"]
        assert request_id not in seen
        seen.add(request_id)
    assert len(seen) == 6


async def test_client_request_id_is_not_trusted(api_client: TestClient[Any, Any]) -> None:
    # A caller-chosen id would let it forge or inject log lines.
    response = await api_client.get("/healthz", headers={"X-Request-Id": "forged-id"})
    assert response.headers["X-Request-Id"] != "forged-id"


# -- the daemon's own page (DESIGN 15) ------------------------------------------


def own_origins(client: TestClient[Any, Any]) -> list[str]:
    return [f"http://127.0.0.1:{client.port}", f"http://localhost:{client.port}"]


async def test_own_page_origin_is_let_through_with_a_valid_token(
    api_client: TestClient[Any, Any], api_vault: Any, mint: Mint
) -> None:
    token = mint("read", "admin")
    for origin in own_origins(api_client):
        headers = {"Origin": origin, **bearer(token)}
        response = await api_client.get("/api/credentials", headers=headers)
        assert response.status == 200, await response.text()
        # The page's one change: revoking a session (browsers send Origin on a DELETE).
        victim = api_vault.sessions.authenticate(mint("proxy"))
        response = await api_client.delete(f"/api/sessions/{victim.id}", headers=headers)
        assert response.status == 204, await response.text()
        # Still no CORS: the page is same-origin and needs none.
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_own_page_origin_without_a_valid_token_is_refused(
    api_client: TestClient[Any, Any], api_vault: Any, mint: Mint
) -> None:
    revoked = mint("admin")
    api_vault.sessions.revoke(api_vault.sessions.authenticate(revoked).id)
    origin = own_origins(api_client)[0]
    for path in ("/api/credentials", "/api/openapi.json", "/api/daemon"):
        for auth in (
            {},
            bearer(revoked),
            bearer("fn_sess_" + "x" * 43),
            {"Authorization": "Basic x"},
        ):
            response = await api_client.get(path, headers={"Origin": origin, **auth})
            # 401, as for any API call without a valid token: the page then asks
            # its user to log in again. Nothing is served.
            body = await problem(response, 401, "unauthorized")
            assert "fn_sess_x" not in json.dumps(body)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other}",
        "http://localhost:{other}",
        "http://[::1]:{port}",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1",
        "http://127.0.0.1:{port}/",
        "http://127.0.0.1:{port}.evil.example",
        "http://LOCALHOST:{port}",
    ],
)
async def test_only_the_own_origin_of_this_port_is_the_page(
    api_client: TestClient[Any, Any], mint: Mint, origin: str
) -> None:
    port = api_client.port
    assert port is not None
    value = origin.format(port=port, other=port + 1 if port < 65535 else port - 1)
    response = await api_client.get(
        "/api/credentials", headers={"Origin": value, **bearer(mint("admin"))}
    )
    await problem(response, 403, "forbidden-origin")


@pytest.mark.parametrize("path", ["/healthz", "/proxy/local/x", "/ui/", "/metrics"])
async def test_own_page_origin_is_for_the_api_only(
    api_client: TestClient[Any, Any], mint: Mint, path: str
) -> None:
    headers = {"Origin": own_origins(api_client)[0], **bearer(mint("admin", "proxy"))}
    await problem(await api_client.get(path, headers=headers), 403, "forbidden-origin")


NAVIGATION = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
}


async def test_a_link_from_elsewhere_opens_the_page_and_nothing_else(
    api_client: TestClient[Any, Any], mint: Mint
) -> None:
    # vaultd ui's redirect file is a file: page, so its navigation is cross-site.
    for path in ("/ui/", "/ui"):
        response = await api_client.get(path, headers=NAVIGATION, allow_redirects=False)
        assert response.status in (200, 302), path
    for method, path, headers in [
        ("GET", "/api/credentials", {**NAVIGATION, **bearer(mint("admin"))}),
        ("GET", "/healthz", NAVIGATION),
        (
            "GET",
            "/ui/app.js",
            {**NAVIGATION, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"},
        ),
        ("GET", "/ui/", {**NAVIGATION, "Sec-Fetch-Dest": "iframe"}),
        ("GET", "/ui/", {**NAVIGATION, "Sec-Fetch-Mode": "no-cors"}),
        ("POST", "/ui/", NAVIGATION),
    ]:
        response = await api_client.request(method, path, headers=headers)
        await problem(response, 403, "forbidden-origin")
