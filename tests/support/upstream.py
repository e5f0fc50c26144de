"""A fake upstream that records what it received, and vaultd's proxy in front of it.

Everything is real: the upstream is an aiohttp server on 127.0.0.1, vaultd is
``create_app`` served on another port, and clients talk to it over sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.config import write_proxy_config
from tests.support.http import DaemonTestServer, bearer, mint_token
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT

OPENAI_KEY = "sk-proj-REALKEYrealkeyREALKEY0001"
ANTHROPIC_KEY = "sk-ant-REALKEYrealkeyREALKEY0002"
OTHER_KEY = "sk-proj-SECONDKEYsecondkey0003"


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    peer: object = None


@dataclass
class Upstream:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def upstream_app(seen: list[Seen], *, other_url: str = "http://127.0.0.1:9") -> web.Application:
    async def record(request: web.Request) -> Seen:
        body = await request.read()
        item = Seen(
            request.method,
            request.path_qs,
            dict(request.headers),
            body,
            request.transport.get_extra_info("peername") if request.transport else None,
        )
        seen.append(item)
        return item

    async def echo(request: web.Request) -> web.Response:
        item = await record(request)
        return web.json_response(
            headers={"X-Request-Id": "req_upstream_123"},
            data={
                "method": item.method,
                "path_qs": item.path_qs,
                "headers": item.headers,
                "body_len": len(item.body),
            },
        )

    async def reflect_key(request: web.Request) -> web.StreamResponse:
        """An upstream error page that quotes the Authorization header, split oddly."""
        await record(request)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        payload = f'{{"error": "invalid key {key}", "again": "{key}"}}'.encode()
        response = web.StreamResponse(status=401)
        response.content_type = "application/json"
        await response.prepare(request)
        for i in range(0, len(payload), 7):  # the key straddles chunks
            await response.write(payload[i : i + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def sse(request: web.Request) -> web.StreamResponse:
        await record(request)
        count = int(request.query.get("n", "5"))
        gap = float(request.query.get("gap", "0.2"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(count):
            await response.write(f"data: {json.dumps({'i': i})}\n\n".encode())
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    async def broken(request: web.Request) -> web.StreamResponse:
        """Starts a body it promised to be long, then drops the connection."""
        await record(request)
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    async def gzipped(request: web.Request) -> web.Response:
        await record(request)
        body = gzip.compress(b'{"hello": "compressed"}' * 50, mtime=0)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(other_url + "/stolen")

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def sink(request: web.Request) -> web.Response:
        seen.append(Seen(request.method, request.path_qs, dict(request.headers), b""))
        total = 0
        while chunk := await request.content.readany():
            total += len(chunk)
        return web.json_response({"received": total})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/reflect-key", reflect_key)
    app.router.add_get("/v1/sse", sse)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/broken", broken)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_post("/sink", sink)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


StartUpstream = Callable[..., Awaitable[Upstream]]


@dataclass
class Proxy:
    config: Config
    client: TestClient[web.Request, web.Application]
    upstream: Upstream
    bystander: Upstream
    token: str
    keys: dict[str, str]

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    def auth(self, token: str | None = None) -> dict[str, str]:
        return bearer(token or self.token)

    def mint(self, **kw: Any) -> str:
        """A proxy-only token unless ``kw`` says otherwise (``mint_token``)."""
        kw.setdefault("scopes", ["proxy"])
        return mint_token(self.client.app[VAULT], self.config, **kw)


def seed_vault(config: Config) -> dict[str, str]:
    vault, _ = init_vault(config)
    with vault:
        dek = vault.unlock()
        ids = {}
        for service, name, secret in (
            ("openai", "primary", OPENAI_KEY),
            ("openai", "second", OTHER_KEY),
            ("anthropic", "main", ANTHROPIC_KEY),
            ("github", "gh", "ghp_GITHUBKEYgithubkey0004"),
            ("hdr", "h", "HDRKEYhdrkey0005"),
            ("basicsvc", "b", "alice:s3cret-PASSWORD-0006"),
            ("querysvc", "q", "QUERYKEYquerykey0007"),
        ):
            ids[f"{service}/{name}"] = vault.credentials.add(
                dek, service=service, name=name, secret=secret
            ).id
    return ids


async def proxy_in_front_of(
    upstream: Upstream,
    bystander: Upstream,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> Proxy:
    """vaultd with every service pointing at ``upstream``, a seeded vault and a token."""
    client, config, ids = await vaultd_for(upstream.url, tmp_path, aiohttp_client)
    result = Proxy(config, client, upstream, bystander, "", ids)
    result.token = result.mint(name="default", scopes=["proxy", "read"])
    return result


async def vaultd_for(
    upstream_url: str,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    extra: str = "",
    *,
    proxy: str = "",
) -> tuple[TestClient[web.Request, web.Application], Config, dict[str, str]]:
    """vaultd with every service at ``upstream_url`` and a seeded vault: its client,
    config and credential ids (``extra`` and ``proxy`` as ``write_proxy_config``)."""
    config = write_proxy_config(tmp_path / "config.toml", upstream_url, extra, proxy=proxy)
    ids = seed_vault(config)
    # Served by the daemon's own runner (access log, protocol errors), as in `vaultd serve`.
    client = await aiohttp_client(DaemonTestServer(create_app(config), host="127.0.0.1"))
    return client, config, ids


@asynccontextmanager
async def raw_upstream(reply: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An upstream on a raw socket: its URL, and each request head it got; answers ``reply``.

    For what an aiohttp server cannot be made to send, or to see the bytes
    that reached it exactly.
    """
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", heads
    finally:
        server.close()
        await server.wait_closed()
