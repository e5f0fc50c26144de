"""A real `vaultd serve`, killed with SIGKILL: the limits' counts are there after a restart.

What a session used is written behind with the audit rows (one flush
interval); a hard crash may lose what came after the last flush, and only
that (README).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv
from tests.support.http import bearer
from tests.support.providers import Call, provider_app

SECRET = "sk-proj-KILLnineLIMITSkey000000042"
FLUSH = 1  # second: [proxy] usage_flush_interval below (durations are whole seconds)


async def test_used_counts_and_limits_are_the_same_after_kill_9(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    calls: list[Call] = []
    server = await aiohttp_server(provider_app(calls), host="127.0.0.1", access_log=None)
    env = DaemonEnv(
        tmp_path,
        f'[proxy]\nusage_flush_interval = "{FLUSH}s"\n'
        f'[services.openai]\nbase_url = "http://127.0.0.1:{server.port}"\n',
    )

    vaultd = env.check
    await vaultd("init")
    await vaultd("add", "openai", "main", stdin=f"{SECRET}\n".encode())
    await vaultd("limit", "openai/main", "--max-requests-per-day", "100")
    token = (
        await vaultd(
            "session", "create", "--service", "openai", "--max-requests", "5", "--rpm", "50"
        )
    ).strip()
    body = {"model": "gpt-4o-mini", "messages": []}

    async def life(client: aiohttp.ClientSession, requests: int) -> list[int]:
        daemon = await env.spawn(
            "serve", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await env.up()
            statuses = []
            for _ in range(requests):
                async with client.post(
                    f"{env.base_url}/proxy/openai/v1/chat/completions",
                    json=body,
                    headers=bearer(token),
                ) as resp:
                    statuses.append(resp.status)
            await asyncio.sleep(FLUSH * 2.5)  # past the next flush
        finally:
            daemon.kill()  # SIGKILL: no shutdown flush
            await daemon.wait()
        return statuses

    async def used() -> Any:
        out = await vaultd("session", "list", "--json")
        return next(s for s in json.loads(out) if s["limits"])["used"]

    async with aiohttp.ClientSession() as client:
        assert await life(client, 3) == [200] * 3
        assert await used() == {"requests": 3, "tokens": 60, "cost_usd": await used_cost()}
        # The restarted daemon goes on from 3: two more, then the limit.
        assert await life(client, 4) == [200, 200, 429, 429]
    assert (await used())["requests"] == 5
    assert len(calls) == 5
    shown = await vaultd("show", "openai/main")
    assert "5 requests, 100 tokens" in shown


async def used_cost() -> float:
    # gpt-4o-mini from the shipped table: 12 in (4 cached) and 8 out per request.
    from vaultd.prices import PriceTable

    one = PriceTable().cost(
        "openai",
        "gpt-4o-mini",
        input_tokens=12,
        output_tokens=8,
        cached_input_tokens=4,
        cache_write_tokens=0,
    )
    assert one is not None
    return round(3 * one, 6)
