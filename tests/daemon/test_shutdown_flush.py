"""SIGTERM to a real `vaultd serve` under proxy traffic: usage written, exit 0.

The flush interval is set far beyond the test's length, so only the shutdown
flush can have written the counts and audit rows that the test then reads.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv
from tests.support.http import bearer

SECRET = "sk-proj-SHUTDOWNflushKEY00000042"


async def test_sigterm_flushes_usage_and_audit(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    seen: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream)
    server = await aiohttp_server(app, host="127.0.0.1", access_log=None)

    env = DaemonEnv(
        tmp_path,
        '[proxy]\nusage_flush_interval = "1h"\n'
        f'[services.openai]\nbase_url = "http://127.0.0.1:{server.port}"\n',
    )

    vaultd = env.check
    await vaultd("init")
    await vaultd("add", "openai", "main", stdin=f"{SECRET}\n".encode())
    token = (await vaultd("session", "create", "--service", "openai")).strip()

    daemon = await env.spawn(
        "serve", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        base = env.base_url
        await env.up()
        async with aiohttp.ClientSession() as client:
            for _ in range(7):
                async with client.get(
                    f"{base}/proxy/openai/v1/models",
                    headers=bearer(token),
                ) as resp:
                    assert resp.status == 200
        daemon.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(daemon.communicate(), timeout=30)
        assert daemon.returncode == 0, err.decode()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()

    assert seen == [f"Bearer {SECRET}"] * 7
    db_path = Path(env.vars["XDG_DATA_HOME"]) / "vaultd" / "vault.db"
    conn = sqlite3.connect(db_path)
    try:
        use_count, last_used = conn.execute(
            "SELECT use_count, last_used_at FROM credentials"
        ).fetchone()
        audit_rows = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        session_used = conn.execute("SELECT last_used_at FROM sessions").fetchone()[0]
    finally:
        conn.close()
    assert use_count == 7
    assert last_used is not None and session_used is not None
    assert audit_rows == 7
    assert SECRET not in err.decode() and token not in err.decode()
