"""A real `vaultd serve` with an OpenAI key, in front of a fake upstream: what `vaultd run` needs.

For tests that run `vaultd run` as a user does, as a process of its own
against a daemon process, with every wait bounded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv, run_process, stop, vaultd_argv
from tests.support.http import bearer
from tests.support.upstream import Seen, upstream_app

KEY = "sk-proj-SERVEDservedSERVED000042"
StartServer = Callable[..., Awaitable[TestServer]]


@dataclass
class Served:
    env: DaemonEnv
    seen: list[Seen]

    @property
    def db(self) -> Path:
        return Path(self.env.vars["XDG_DATA_HOME"]) / "vaultd" / "vault.db"

    async def status(self, client: aiohttp.ClientSession, token: str) -> tuple[int, str]:
        """What the command's SDK would get for a call with ``token``: status and body."""
        async with client.get(
            f"{self.env.base_url}/proxy/openai/v1/models", headers=bearer(token)
        ) as resp:
            return resp.status, await resp.text()

    async def vaultd(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``vaultd ARGS`` as a process of its own, as a user runs it against this daemon
        (``env`` added to its environment): exit status, stdout, stderr."""
        return await run_process(
            vaultd_argv(*args), {**self.env.vars, **(env or {})}, cwd=self.env.tmp
        )

    def sessions(self) -> list[tuple[str, str, int | None, int | None]]:
        """Every session: key prefix, name, expires_at, revoked_at, oldest first."""
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute(
                "SELECT key_prefix, name, expires_at, revoked_at FROM sessions"
                " ORDER BY created_at, id"
            ).fetchall()
        finally:
            conn.close()
        return [(r[0], r[1], r[2], r[3]) for r in rows]


@asynccontextmanager
async def served_openai(tmp_path: Path, aiohttp_server: StartServer) -> AsyncIterator[Served]:
    """An initialised vault with ``KEY`` as openai's default, its daemon running."""
    seen: list[Seen] = []
    upstream = await aiohttp_server(upstream_app(seen), host="127.0.0.1", access_log=None)
    env = DaemonEnv(tmp_path, f'[services.openai]\nbase_url = "http://127.0.0.1:{upstream.port}"\n')
    await env.check("init")
    await env.check("add", "openai", "main", stdin=f"{KEY}\n".encode())
    daemon, log = env.start()
    try:
        await env.up()
        yield Served(env, seen)
    finally:
        assert stop(daemon) == 0, log.read_text()
    assert KEY not in log.read_text()
