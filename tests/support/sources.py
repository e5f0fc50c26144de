"""The remote-source tests' daemon: an in-process vaultd whose config names a source,
the providers' fake upstream behind it, and fake source servers for what a
real OpenBao will not do (redirect, lie, list hostile names).

The real server is ``tests.support.openbao``; the ``rig`` fixture that builds
a daemon against it is in ``tests/sources/conftest.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.config import write_proxy_config
from tests.support.openbao import BaoTenant
from tests.support.providers import Call, provider_app
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT

KEY = "sk-proj-TEAMKEYteamkey0000000001"
ROTATED = "sk-proj-TEAMKEYrotated000000002"
PATH = "vaultd/openai/team"
FAKE_TOKEN = "s.faketokenfaketokenfake00"

MakeServer = Callable[..., Awaitable[TestServer]]
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a fake source heard: (method, path and query, headers).
Heard = list[tuple[str, str, dict[str, str]]]


def source_table(bao: BaoTenant, *, refresh: str = "1s", max_stale: str = "1h") -> str:
    """``[sources.team]`` for ``bao``'s mount, logging in with its AppRole."""
    approle = bao.approle
    return f"""
[sources.team]
url = "{bao.url}"
mount = "{bao.mount}"
prefix = "{bao.prefix}"
auth = "approle"
role_id = "{approle.role_id}"
secret_id_file = "{approle.secret_id_file}"
refresh_interval = "{refresh}"
max_stale = "{max_stale}"
"""


def token_file(tmp_path: Path, token: str = FAKE_TOKEN) -> Path:
    """A 0600 token file, as ``bao login`` writes one."""
    path = tmp_path / "vault-token"
    path.write_text(token)
    path.chmod(0o600)
    return path


def token_file_source(url: str, path: Path) -> str:
    """``[sources.team]`` at ``url`` with ``auth = "token_file"``."""
    return f"""
[sources.team]
url = "{url}"
auth = "token_file"
token_file = "{path}"
refresh_interval = "1s"
"""


def fake_source(heard: Heard, handler: Handler) -> web.Application:
    """A source server that records every request and answers with ``handler``."""

    async def any_request(request: web.Request) -> web.StreamResponse:
        heard.append((request.method, request.path_qs, dict(request.headers)))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    return app


@dataclass
class Rig:
    """A daemon with a source, the upstream's calls, and a proxy+read+admin token."""

    config: Config
    client: TestClient[web.Request, web.Application]
    seen: list[Call]
    token: str

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def chat(self) -> tuple[int, dict[str, object]]:
        """One proxied chat completion: the status and the JSON answer."""
        resp = await self.client.post(
            "/proxy/openai/v1/chat/completions",
            headers=self.auth(),
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        body = await resp.json()
        return resp.status, body

    async def listing(self) -> list[dict[str, object]]:
        resp = await self.client.get("/api/credentials", headers=self.auth())
        assert resp.status == 200
        items: list[dict[str, object]] = await resp.json()
        return items

    async def listed(self, seconds: float = 5.0) -> None:
        """Until every source has made its first listing (a request for a name the
        vault holds does not wait for it)."""
        from vaultd.sources.source import SOURCES

        states = self.client.app[SOURCES].catalog.sources.values()

        async def done() -> bool:
            return all(state.listed for state in states)

        await until(done, seconds)

    def sent_keys(self) -> list[str]:
        """The Authorization header of every call the upstream got."""
        return [call.headers.get("Authorization", "") for call in self.seen]


async def start_rig(
    tmp_path: Path, table: str, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> Rig:
    """vaultd in process, its config ``table`` plus every service at a fake upstream,
    and a new, empty vault: what it proxies, its sources hold."""
    seen: list[Call] = []
    upstream = await aiohttp_server(provider_app(seen), host="127.0.0.1", access_log=None)
    config = write_proxy_config(
        tmp_path / "config.toml", f"http://127.0.0.1:{upstream.port}", table
    )
    init_vault(config)[0].close()
    client = await aiohttp_client(create_app(config), server_kwargs={"host": "127.0.0.1"})
    _session, token = client.app[VAULT].sessions.create(
        name="remote",
        scopes=["proxy", "read", "admin"],
        services=["*"],
        ttl=600,
        known_services=config.services,
    )
    return Rig(config, client, seen, token)


async def until(check: Callable[[], Awaitable[bool]], seconds: float, step: float = 0.1) -> float:
    """Poll ``check`` until it holds (at most ``seconds``): how long it took."""
    started = time.monotonic()
    for _ in range(int(seconds / step) + 1):
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(step)
    pytest.fail(f"not within {seconds}s")
