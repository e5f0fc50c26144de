"""A token holder stalls request bodies to hold the upstream pool: others still get answers.

The attack: requests to one upstream host that announce a long body
(``Content-Length: 60000`` here, under the test config's 64 KiB limit) and
send one byte, each holding a pooled connection while the upstream waits for
the rest. Bounds: per-session requests in flight (429), the wait for a
pooled connection (503), and the body's stall (408).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.http import bearer, mint_token, split_reply
from tests.support.upstream import StartUpstream, vaultd_for
from vaultd.config import Config
from vaultd.http.appkeys import VAULT

ClientMaker = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


async def vaultd_with(
    tmp_path: Path, start_upstream: StartUpstream, aiohttp_client: ClientMaker, proxy: str
) -> tuple[TestClient[web.Request, web.Application], Config]:
    upstream = await start_upstream()
    client, config, _ = await vaultd_for(upstream.url, tmp_path, aiohttp_client, proxy=proxy)
    return client, config


async def stall(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /proxy/openai/sink HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
        "\r\nContent-Length: 60000\r\n\r\nx".encode()
    )
    await writer.drain()
    return reader, writer


async def status_of(reader: asyncio.StreamReader, wait: float) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
    return split_reply(head)[0]


async def test_one_session_cannot_hold_the_pool_and_stalled_bodies_end_in_408(
    tmp_path: Path, start_upstream: StartUpstream, aiohttp_client: ClientMaker
) -> None:
    client, config = await vaultd_with(
        tmp_path, start_upstream, aiohttp_client, 'body_timeout = "1s"'
    )
    assert config.max_session_concurrency == 64  # the default
    vault = client.app[VAULT]
    attacker = mint_token(vault, config, scopes=["proxy"], name="attacker")
    other = mint_token(vault, config, scopes=["proxy"], name="other")
    assert client.server.port is not None
    conns = [await stall(client.server.port, attacker) for _ in range(130)]
    try:
        await asyncio.sleep(0.2)
        started = time.monotonic()
        resp = await client.get("/proxy/openai/v1/models", headers=bearer(other))
        assert resp.status == 200
        assert time.monotonic() - started < 2
        statuses = await asyncio.gather(*(status_of(r, 10) for r, _ in conns))
        assert statuses.count(429) == 130 - 64
        assert statuses.count(408) == 64
    finally:
        for _, writer in conns:
            writer.close()


async def test_a_request_waits_for_a_pooled_connection_only_so_long(
    tmp_path: Path, start_upstream: StartUpstream, aiohttp_client: ClientMaker
) -> None:
    client, config = await vaultd_with(
        tmp_path,
        start_upstream,
        aiohttp_client,
        'body_timeout = "10s"\npool_timeout = "1s"\nmax_session_concurrency = 200',
    )
    vault = client.app[VAULT]
    attacker = mint_token(vault, config, scopes=["proxy"], name="attacker")
    other = mint_token(vault, config, scopes=["proxy"], name="other")
    assert client.server.port is not None
    conns = [await stall(client.server.port, attacker) for _ in range(128)]
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        resp = await client.get("/proxy/openai/v1/models", headers=bearer(other))
        body = await resp.json()
        assert resp.status == 503, body
        assert body["type"].endswith("/upstream-pool-busy")
        assert 0.9 < time.monotonic() - started < 5
    finally:
        for _, writer in conns:
            writer.close()
