"""The proxy's upstream sender (vaultd/proxy/client.py, client_fast.py), through real sockets.

The fast client drives aiohttp's client parts directly rather than
``ClientSession.request``; these tests hold both clients to what a proxy must
(and must not) send. They run on the fast path here and on the public one in
tests/daemon/test_fastpaths.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ClientRequest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.http import bearer, mint_token
from tests.support.upstream import (
    OPENAI_KEY,
    Proxy,
    Seen,
    Upstream,
    proxy_in_front_of,
    vaultd_for,
)
from vaultd.http.appkeys import VAULT
from vaultd.services import build_service


async def test_upstream_gets_only_the_clients_headers_and_the_key(proxy: Proxy) -> None:
    """No User-Agent, Accept or Content-Type that the client did not send."""
    resp = await proxy.client.post(
        "/proxy/openai/v1/echo",
        data=b"raw bytes",
        headers={**proxy.auth(), "X-Client": "mine"},
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )
    assert resp.status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.body == b"raw bytes"
    names = {name.lower() for name in seen.headers}
    assert names == {
        "host",
        "content-length",
        "x-client",
        "accept-encoding",
        "authorization",
    }, names
    assert seen.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.headers["Accept-Encoding"] == "identity"


async def test_clients_own_user_agent_and_accept_pass_unchanged(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/openai/v1/models",
        headers={**proxy.auth(), "User-Agent": "my-tool/1.0", "Accept": "application/json"},
    )
    assert resp.status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.headers["User-Agent"] == "my-tool/1.0"
    assert seen.headers["Accept"] == "application/json"


def _one_answer_per_connection(seen: list[Seen]) -> web.Application:
    """An upstream that closes a keep-alive connection when a second request comes on it.

    That is what a pooled connection looks like to a request that lost the
    race against the upstream's keep-alive timeout: sent, then cut off
    without an answer.
    """
    answered: set[object] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(Seen(request.method, request.path_qs, dict(request.headers), b""))
        if request.protocol in answered:
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the closed connection
        answered.add(request.protocol)
        return web.json_response({"answer": len(seen)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
async def test_connection_closed_under_a_request_is_retried_once_without_a_body(
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    method: str,
    retried: bool,
) -> None:
    """As ClientSession.request would: a GET cut off on a reused connection
    is sent again on a new one; a POST (whose body may have gone) is not."""
    seen: list[Seen] = []
    server = await aiohttp_server(_one_answer_per_connection(seen), host="127.0.0.1")
    upstream = Upstream(server, seen)
    proxy = await proxy_in_front_of(upstream, upstream, tmp_path, aiohttp_client)
    first = await proxy.client.get("/proxy/openai/a", headers=proxy.auth())
    assert first.status == 200
    second = await proxy.client.request(
        method, "/proxy/openai/b", headers=proxy.auth(), data=b"x" if method == "POST" else None
    )
    if retried:
        assert second.status == 200
        assert (await second.json())["answer"] == 3  # the cut-off try was the second
        assert [s.path_qs for s in seen] == ["/a", "/b", "/b"]
    else:
        assert second.status == 502
        assert [s.path_qs for s in seen] == ["/a", "/b"]


async def test_a_refused_connection_is_not_tried_twice(
    proxy: Proxy, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a request cut off on a reused connection is retried: one that
    never connected (refused, DNS, certificate) fails at once, as in aiohttp."""
    services = dict(proxy.config.services)
    services["openai"] = build_service(
        "openai", {"base_url": f"http://127.0.0.1:{unused_tcp_port}"}, services["openai"]
    )
    object.__setattr__(proxy.config, "services", services)
    attempts = 0
    real_connect = aiohttp.BaseConnector.connect

    async def counting_connect(
        self: aiohttp.BaseConnector, req: ClientRequest, traces: Any, timeout: Any
    ) -> Any:
        nonlocal attempts
        if req.url.port == unused_tcp_port:  # not the test client's own, to vaultd
            attempts += 1
        return await real_connect(self, req, traces, timeout)

    monkeypatch.setattr(aiohttp.BaseConnector, "connect", counting_connect)
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
    assert resp.status == 502
    assert attempts == 1


# -- what the client library itself could add: environment proxies, cookies ---------------


async def test_environment_proxies_are_never_used(
    proxy: Proxy,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy named in the daemon's environment would see every key: it gets nothing."""
    trapped: list[str] = []

    async def trap(request: web.Request) -> web.Response:
        trapped.append(request.path_qs)
        return web.Response(text="trap")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trap)
    server = await aiohttp_server(app, host="127.0.0.1")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    for method in ("GET", "POST"):
        resp = await proxy.client.request(
            method,
            "/proxy/openai/v1/x",
            headers=proxy.auth(),
            data=b"b" if method == "POST" else None,
        )
        assert resp.status == 200
    assert trapped == []
    assert len(proxy.upstream.seen) == 2


async def test_an_upstreams_cookie_never_rides_on_a_later_request(
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    """Reached as ``localhost`` (a cookie jar ignores cookies from IP addresses), the
    upstream sets a cookie; no later request of any session carries it."""
    seen: list[Seen] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(Seen(request.method, request.path_qs, dict(request.headers), b""))
        response = web.Response(text="ok")
        response.set_cookie("upstream_session", "COOKIEvalue0001", path="/")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    upstream = Upstream(server, seen)
    client, config, _ = await vaultd_for(
        f"http://localhost:{server.port}", tmp_path, aiohttp_client
    )
    first = mint_token(client.app[VAULT], config, scopes=["proxy"])
    second = mint_token(client.app[VAULT], config, scopes=["proxy"])
    for token in (first, first, second):
        resp = await client.get("/proxy/openai/v1/x", headers=bearer(token))
        assert resp.status == 200
        assert "Set-Cookie" not in resp.headers
    assert len(upstream.seen) == 3
    assert all("Cookie" not in s.headers for s in upstream.seen)
