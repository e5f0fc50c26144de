"""Talking to the daemon over HTTP in tests: the server, tokens, problems, raw bytes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from vaultd.config import Config
from vaultd.core.sessions import ALL_SERVICES, DEFAULT_SCOPES
from vaultd.core.vault import Vault
from vaultd.daemon.app import create_app
from vaultd.daemon.connection import DaemonRunner
from vaultd.daemon.runners import daemon_runner
from vaultd.http.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE

Mint = Callable[..., str]
PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id", "error"}


class DaemonTestServer(TestServer):
    """A test server on the daemon's own runner, so parser errors are problems here too.

    Without aiohttp's handler cancellation, which its TestServer turns on and
    `vaultd serve` does not: a client that leaves mid-answer is noticed at the
    next write, as in the daemon.
    """

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)
        return daemon_runner(self.app, **kwargs)


class PublicTestServer(TestServer):
    """``DaemonTestServer`` on the public runner itself, whatever VAULTD_FAST_PATHS says."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)
        return DaemonRunner(self.app, **kwargs)


async def start_client(
    aiohttp_client: AiohttpClient, config: Config, app: web.Application | None = None
) -> TestClient[Any, Any]:
    """A client on a real socket to ``create_app(config)``, served as ``vaultd serve`` does."""
    return await aiohttp_client(DaemonTestServer(app or create_app(config)))


def bearer(token: str) -> dict[str, str]:
    """The header that carries a session token, to the API and the proxy alike."""
    return {"Authorization": f"Bearer {token}"}


def mint_token(vault: Vault, config: Config, **kw: Any) -> str:
    """A fresh session token from the store (default: every scope a tool gets, every service)."""
    kw.setdefault("name", "test")
    kw.setdefault("scopes", list(DEFAULT_SCOPES))
    kw.setdefault("services", [ALL_SERVICES])
    kw.setdefault("ttl", 3600)
    _session, token = vault.sessions.create(known_services=config.services, **kw)
    return token


async def problem(response: ClientResponse, status: int, slug: str) -> dict[str, Any]:
    """The problem body of ``response``, after checking everything every problem has."""
    body = await response.text()
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
    data: dict[str, Any] = json.loads(body)
    assert set(data) >= PROBLEM_FIELDS, data
    assert data["type"] == PROBLEM_TYPE_BASE + slug, data
    assert data["status"] == status
    if response.url.raw_path.startswith("/proxy/"):
        # DESIGN 5: on answers vaultd makes on /proxy/, where the SDKs read it.
        assert data["error"] == {"message": data["detail"], "type": slug, "code": slug}, data
    else:
        assert data["error"] == data["detail"]
    assert data["detail"] and "\n" not in data["detail"]
    assert data["request_id"] == response.headers["X-Request-Id"]
    return data


async def raw_http(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are (no client fills in a Host) and read the reply."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read()  # until the server closes (Connection: close)
        finally:
            writer.close()

    raw = await asyncio.wait_for(exchange(), timeout=10)
    return split_reply(raw)


def split_reply(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body bytes of a raw HTTP/1.x reply."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# What only vaultd serve's fast server path does (daemon/connection_fast.py):
# a problem body for a request aiohttp cannot parse, a head bounded while it
# arrives. The suite's run on the public paths (tests/daemon/test_fastpaths.py)
# skips these.
fast_server_only = pytest.mark.skipif(
    os.environ.get("VAULTD_FAST_PATHS", "").strip().lower() in ("off", "none", "client"),
    reason="only the fast server path answers this way",
)
