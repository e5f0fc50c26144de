"""Helpers for the HTTP API tests (the fixtures are in tests/api_fixtures.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from vaultd.config import Config, load_config
from vaultd.daemon.app import create_app
from vaultd.daemon.connection import daemon_runner
from vaultd.http.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE

Mint = Callable[..., str]
PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id", "error"}


def write_config(tmp_path: Path, extra: str = "") -> Config:
    """A config whose every path is under ``tmp_path``; nothing reads the real home."""
    home = tmp_path / "api-home"
    home.mkdir(mode=0o700, exist_ok=True)
    path = tmp_path / "vaultd.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{home}/data"\n'
        f'[crypto]\nkey_file = "{home}/config/master.key"\n'
        '[services.local]\nbase_url = "http://127.0.0.1:9"\n' + extra
    )
    return load_config(config_path=str(path), env={"HOME": str(home)})


class DaemonTestServer(TestServer):
    """A test server on the daemon's own runner, so parser errors are problems here too."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return daemon_runner(self.app, **kwargs)


async def start_client(
    aiohttp_client: AiohttpClient, config: Config, app: web.Application | None = None
) -> TestClient[Any, Any]:
    """A client on a real socket to ``create_app(config)``, served as ``vaultd serve`` does."""
    return await aiohttp_client(DaemonTestServer(app or create_app(config)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def problem(response: ClientResponse, status: int, slug: str) -> dict[str, Any]:
    """The problem body of ``response``, after checking everything every problem has."""
    body = await response.text()
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
    data: dict[str, Any] = json.loads(body)
    assert set(data) >= PROBLEM_FIELDS, data
    assert data["type"] == PROBLEM_TYPE_BASE + slug, data
    assert data["status"] == status
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
