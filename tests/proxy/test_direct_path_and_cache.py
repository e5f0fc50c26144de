"""The proxy's direct path (``proxy.direct.front_door``) and the cache refilled after usage flushes.

Proxied calls skip aiohttp's router and middlewares; these check that they
still get every check and header the routed path gives, that requests the
direct path does not take still work, and that refilling the cache after the
usage writer's commit never lets a revoked token or a replaced key through.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web, web_app
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from aiohttp.typedefs import Handler

from tests.support.config import write_proxy_config
from tests.support.http import DaemonTestServer, PublicTestServer, bearer
from tests.support.upstream import OPENAI_KEY, Proxy, StartUpstream, seed_vault
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.daemon.app import create_app
from vaultd.daemon.connection import DaemonRunner
from vaultd.http.appkeys import VAULT
from vaultd.proxy.direct import _direct, front
from vaultd.proxy.routes import CACHE, FORWARDER, USAGE

STANDARD = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Server": "vaultd"}


def _revoke_elsewhere(config: Config) -> None:
    # As `vaultd session revoke` in another process would.
    conn = sqlite3.connect(config.db_path)
    conn.execute("UPDATE sessions SET revoked_at = 1")
    conn.commit()
    conn.close()


async def test_revocation_after_a_flush_refilled_the_cache(proxy: Proxy) -> None:
    token = proxy.mint()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))).status == 200
    cache = proxy.client.app[CACHE]
    await proxy.client.app[USAGE].flush()
    # The flush's commit emptied the cache, and it was filled again at once.
    assert len(cache) == 3  # session, credential, secret
    _revoke_elsewhere(proxy.config)
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))
    assert resp.status == 401


async def test_a_revoked_session_is_not_refilled(proxy: Proxy) -> None:
    token = proxy.mint()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))).status == 200
    _revoke_elsewhere(proxy.config)
    await proxy.client.app[USAGE].flush()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))).status == 401


async def test_a_rotated_key_is_used_after_a_refill(proxy: Proxy) -> None:
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    await proxy.client.app[USAGE].flush()
    # Rotated through another connection, as the CLI would.
    other, _ = init_vault(proxy.config)
    with other:
        other.credentials.update(
            proxy.keys["openai/primary"], dek=other.unlock(), secret="sk-proj-ROTATEDrotated0009"
        )
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
    assert resp.status == 200
    assert proxy.upstream.seen[-1].headers["Authorization"] == "Bearer sk-proj-ROTATEDrotated0009"


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("/proxy/openai/v1/x", {}),  # direct
        ("/proxy/openai/v1/%78", {}),  # a percent escape: through the app
        ("/proxy/openai/v1/x", {"Expect": "100-continue"}),  # through the app
    ],
)
async def test_both_paths_answer_alike(proxy: Proxy, target: str, extra: dict[str, str]) -> None:
    resp = await proxy.client.get(target, headers={**proxy.auth(), **extra})
    assert resp.status == 200
    for name, value in STANDARD.items():
        assert resp.headers[name] == value
    assert resp.headers["X-Request-Id"] != resp.headers["X-Upstream-Request-Id"]
    assert resp.headers["Content-Length"] == str(len(await resp.read()))
    assert OPENAI_KEY.encode() not in await resp.read()


async def test_proxied_calls_skip_the_router_and_the_rest_go_through_it(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path is taken, not only correct: a proxied call never reaches the router.

    On either path: it needs none of aiohttp's internals (the suite's run with
    VAULTD_FAST_PATHS=off runs this too).
    """
    resolved = count_resolves(proxy.client.app, monkeypatch)
    assert (await proxy.client.get("/proxy/openai/v1/x", headers=proxy.auth())).status == 200
    assert resolved == []
    assert (await proxy.client.get("/healthz")).status == 200
    assert resolved == ["/healthz"]


async def test_the_public_runner_takes_the_direct_path(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct path needs no internal of aiohttp's: the public runner fronts proxied calls."""
    runner, client, token = await on_the_public_runner(tmp_path, start_upstream, aiohttp_client)
    assert type(runner) is DaemonRunner and runner.direct
    resolved = count_resolves(client.app, monkeypatch)
    resp = await client.get("/proxy/openai/x", headers=bearer(token))
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] and resp.headers["Server"] == "vaultd"
    assert (await client.get("/healthz")).status == 200
    assert resolved == ["/healthz"]


class _RenamedHandlerServer:
    """An aiohttp Server as a later release might make it: no ``request_handler``."""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("not called")


def test_without_the_server_attribute_everything_goes_through_the_app(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vaultd")
    server = _RenamedHandlerServer()
    assert front(cast("web.Server", server), proxy.client.app) is False
    assert not hasattr(server, "request_handler")
    assert [r.getMessage() for r in caplog.records] == [
        "the proxy's direct path: off (aiohttp's Server has no request_handler);"
        " proxied calls go through the app's router and middlewares"
    ]


class _SetOnceServer(web.Server):
    """aiohttp's Server as a later release might make it: ``request_handler`` read-only."""

    @property
    def request_handler(self) -> Any:
        return self._set_once

    @request_handler.setter
    def request_handler(self, handler: Any) -> None:
        if hasattr(self, "_set_once"):
            raise AttributeError("property 'request_handler' has no setter")
        self._set_once = handler


async def test_a_read_only_server_handler_means_every_call_goes_through_the_app(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The daemon still starts, says so once, and serves every call through the app."""
    caplog.set_level(logging.WARNING, logger="vaultd")
    monkeypatch.setattr(web_app, "Server", _SetOnceServer)  # what AppRunner's setup makes
    runner, client, token = await on_the_public_runner(tmp_path, start_upstream, aiohttp_client)
    assert not runner.direct
    assert [r.getMessage() for r in caplog.records if "direct path" in r.getMessage()] == [
        "the proxy's direct path: off (aiohttp's Server.request_handler cannot be set);"
        " proxied calls go through the app's router and middlewares"
    ]
    resolved = count_resolves(client.app, monkeypatch)
    resp = await client.get("/proxy/openai/x", headers=bearer(token))
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] and resp.headers["Cache-Control"] == "no-store"
    assert resolved == ["/proxy/openai/x"]


async def test_a_service_added_by_a_reload_goes_direct_too(
    proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = f'[services.added]\nbase_url = "{proxy.upstream.url}"\n'
    reloaded = write_proxy_config(tmp_path / "reloaded.toml", proxy.upstream.url, extra)
    proxy.client.app[FORWARDER].reconfigure(reloaded)
    resolved = count_resolves(proxy.client.app, monkeypatch)
    resp = await proxy.client.get("/proxy/added/v1/x", headers=proxy.auth())
    # No credential for it in the vault: the proxy's own answer, not the router's.
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["type"].endswith("/no-credential")
    assert resolved == []


async def on_the_public_runner(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> tuple[DaemonRunner, TestClient[web.Request, web.Application], str]:
    """vaultd in front of a fake upstream on the public runner: the runner, a client, a token."""
    upstream = await start_upstream()
    config = write_proxy_config(tmp_path / "config.toml", upstream.url)
    seed_vault(config)
    server = PublicTestServer(create_app(config), host="127.0.0.1")
    client = await aiohttp_client(server)
    assert isinstance(server.runner, DaemonRunner)
    _session, token = client.app[VAULT].sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=3600, known_services=config.services
    )
    return server.runner, client, token


def count_resolves(app: web.Application, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``app``'s router resolves from now on (not the fake upstream's)."""
    resolved: list[str] = []
    real_resolve = web.UrlDispatcher.resolve

    async def counting(self: web.UrlDispatcher, request: web.Request) -> Any:
        if self is app.router:
            resolved.append(request.path)
        return await real_resolve(self, request)

    monkeypatch.setattr(web.UrlDispatcher, "resolve", counting)
    return resolved


async def test_an_app_the_direct_path_does_not_stand_in_for_keeps_its_handler() -> None:
    app = web.Application()  # no proxy: nothing to go direct to

    async def routed(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("not called")

    server = web.Server(routed)
    assert front(server, app) is False
    assert server.request_handler is routed


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({}, 200),
    ],
)
async def test_the_direct_path_keeps_the_guard(
    proxy: Proxy, headers: dict[str, str], status: int
) -> None:
    resp = await proxy.client.get("/proxy/openai/x", headers={**proxy.auth(), **headers})
    assert resp.status == status
    assert resp.headers["X-Request-Id"]
    assert resp.headers["Cache-Control"] == "no-store"
    if status >= 400:
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["request_id"] == resp.headers["X-Request-Id"]
        assert proxy.upstream.seen == []


async def test_errors_on_the_direct_path_are_problems(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/x")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert resp.headers["Server"] == "vaultd"


async def test_upstream_cors_headers_never_pass(
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    async def cors(request: web.Request) -> web.Response:
        headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*"}
        return web.Response(text="ok", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", cors)
    upstream = await aiohttp_server(app, host="127.0.0.1", access_log=None)
    config = write_proxy_config(tmp_path / "config.toml", f"http://127.0.0.1:{upstream.port}")
    seed_vault(config)
    client = await aiohttp_client(DaemonTestServer(create_app(config), host="127.0.0.1"))
    vault = client.app[VAULT]
    _session, token = vault.sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=3600, known_services=config.services
    )
    resp = await client.get("/proxy/openai/x", headers=bearer(token))
    assert resp.status == 200
    assert await resp.text() == "ok"
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


def test_direct_takes_only_what_the_router_would_match_as_is() -> None:
    services = {"openai": object()}

    def direct(target: str, **headers: str) -> bool:
        return _direct(make_mocked_request("GET", target, headers=headers), services)  # type: ignore[arg-type]

    assert direct("/proxy/openai/v1/models")
    assert direct("/proxy/openai/")
    assert direct("/proxy/openai/v1/x?q=a%20b")  # escapes in the query are fine
    assert not direct("/proxy/openai")  # no route: the router's 404
    assert not direct("/proxy/openai/v1/%2e%2e")  # decoded differently: routed
    assert not direct("/proxy/open%61i/v1")
    assert not direct("/proxy/other/v1")  # an unknown service: routed, then 404
    assert not direct("/api/credentials")
    assert not direct("/proxy/openai/v1", Expect="100-continue")


async def test_concurrent_requests_across_a_flush(proxy: Proxy) -> None:
    async def one() -> int:
        resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
        await resp.read()
        return resp.status

    usage = proxy.client.app[USAGE]
    results = await asyncio.gather(*(one() for _ in range(20)), usage.flush(), usage.flush())
    assert results[:20] == [200] * 20


async def test_an_app_with_more_middlewares_routes_proxied_calls_through_them(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    upstream = await start_upstream()
    config = write_proxy_config(tmp_path / "config.toml", upstream.url)
    seed_vault(config)
    app = create_app(config)
    seen: list[str] = []

    @web.middleware
    async def tag(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.raw_path)
        return await handler(request)

    app.middlewares.append(tag)
    client = await aiohttp_client(DaemonTestServer(app, host="127.0.0.1"))
    _session, token = client.app[VAULT].sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=3600, known_services=config.services
    )
    resp = await client.get("/proxy/openai/x", headers=bearer(token))
    assert resp.status == 200
    assert seen == ["/proxy/openai/x"]


@pytest.mark.parametrize(
    ("method", "target", "extra", "status"),
    [
        ("GET", "/proxy/openai/x", {"Authorization": ""}, 401),
        ("TRACE", "/proxy/openai/x", {}, 405),
        ("GET", "/proxy/openai/fn_sess_" + "A" * 43, {}, 400),
        ("GET", "/proxy/openai/x", {"X-Vaultd-Credential": "nosuch"}, 404),
        ("POST", "/proxy/openai/x", {"Content-Length": "999999"}, 413),
        ("GET", "/proxy/openai/gzip", {}, 502),
        ("GET", "/proxy/openai/slow?s=3", {}, 504),
        ("GET", "/proxy/openai/v1/sse?n=2&gap=0", {}, 200),
        ("HEAD", "/proxy/openai/x", {}, 200),
    ],
)
async def test_every_direct_answer_has_the_standard_headers(
    proxy: Proxy, method: str, target: str, extra: dict[str, str], status: int
) -> None:
    """Refusals, upstream failures and streamed or bodiless answers alike, with no CORS."""
    headers = {**proxy.auth(), **extra}
    if not headers["Authorization"]:
        del headers["Authorization"]
    resp = await proxy.client.request(method, target, headers=headers)
    assert resp.status == status, await resp.text()
    for name, value in STANDARD.items():
        assert resp.headers[name] == value
    assert len(resp.headers["X-Request-Id"]) == 36
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    if status >= 400:
        assert (await resp.json())["request_id"] == resp.headers["X-Request-Id"]


async def test_a_revocation_reaches_every_request_sent_after_it_under_load(proxy: Proxy) -> None:
    """One database check serves every request whose head arrived before it
    (arrivals.py): with requests in flight on many connections, each one
    sent after the revocation committed is refused all the same."""
    token = proxy.mint()
    revoked = asyncio.Event()
    results: list[tuple[bool, int]] = []  # (sent after the revocation, status)

    async def client() -> None:
        for _ in range(40):
            after = revoked.is_set()
            resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))
            results.append((after, resp.status))
            resp.release()

    clients = [asyncio.create_task(client()) for _ in range(16)]
    for _ in range(500):  # bounded: until some requests went through
        if len(results) >= 48:
            break
        await asyncio.sleep(0.005)
    _revoke_elsewhere(proxy.config)
    revoked.set()
    await asyncio.gather(*clients)
    after = [status for sent_after, status in results if sent_after]
    before = [status for sent_after, status in results if not sent_after]
    assert after and set(after) == {401}, sorted(set(after))
    assert 200 in before


async def test_requests_that_arrived_together_share_one_check(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = proxy.client.app[CACHE]
    checks = 0
    real_refresh = cache.refresh

    def counting_refresh() -> bool:
        nonlocal checks
        checks += 1
        return real_refresh()

    monkeypatch.setattr(cache, "refresh", counting_refresh)
    statuses = []
    for _ in range(5):
        answers = await asyncio.gather(
            *(proxy.client.get("/proxy/openai/x", headers=proxy.auth()) for _ in range(16))
        )
        statuses += [a.status for a in answers]
    assert statuses == [200] * 80
    assert 5 <= checks < 80  # at least one per wave, fewer than one per request
