"""Issue 17, item 10: the daemon deletes sessions that ended longer ago than [sessions] keep.

A real `vaultd serve` and real CLI processes; the audit rows of a pruned
session stay, and name it by id. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv, stop
from tests.support.http import bearer
from tests.support.upstream import Seen, upstream_app

SECRET = "sk-proj-PRUNEprunePRUNEprune0001"


async def test_ended_sessions_are_pruned_and_their_audit_rows_stay(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    seen: list[Seen] = []
    server = await aiohttp_server(upstream_app(seen), host="127.0.0.1", access_log=None)
    env = DaemonEnv(
        tmp_path,
        '[sessions]\nkeep = "1s"\n[proxy]\nusage_flush_interval = "1s"\n'
        f'[services.openai]\nbase_url = "http://127.0.0.1:{server.port}"\n',
    )
    vaultd = env.check
    await vaultd("init")
    await vaultd("add", "openai", "main", stdin=f"{SECRET}\n".encode())
    proc, log = env.start()
    try:
        await env.up()
        kept = (await vaultd("session", "create", "--name", "in-use", "--ttl", "1h")).strip()
        done = (await vaultd("session", "create", "--name", "run: python")).strip()

        async def sessions(*flags: str) -> dict[str, dict[str, Any]]:
            listed = json.loads(await vaultd("session", "list", "--json", *flags))
            return {s["key_prefix"]: s for s in listed}

        done_id = (await sessions())[done[:12]]["id"]
        async with aiohttp.ClientSession() as client:
            url = f"{env.base_url}/proxy/openai/v1/models"
            async with client.get(url, headers=bearer(done)) as resp:
                assert resp.status == 200
        await vaultd("session", "revoke", done[:12])  # the prefix the list shows
        assert list(await sessions()) == [kept[:12]]

        for _ in range(100):  # at most 10 s: pruned a second or two after keep
            if done[:12] not in await sessions("--all"):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the revoked session was never pruned: {log.read_text()}")
        assert list(await sessions("--all")) == [kept[:12]]

        # Its audit row stays (no foreign key), naming the session by id.
        for _ in range(50):  # written behind, within a flush interval
            rows = json.loads(await vaultd("audit", "--json"))
            if rows:
                break
            await asyncio.sleep(0.1)
        assert [(r["session_id"], r["status"]) for r in rows] == [(done_id, 200)]
        assert done_id in await vaultd("audit")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = log.read_text()
    assert "pruned 1 session revoked or expired more than 1s ago ([sessions] keep)" in text
    assert done not in text and kept not in text and "Traceback" not in text
