"""`vaultd run` with limits, as a user runs it: a real process, the official SDK inside it."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.daemon import run_vaultd
from tests.support.providers import provider_rig

# Five calls with the official SDK, its default retries left on: a spent
# budget must not be retried (x-should-retry: false), nor reach the upstream.
SCRIPT = """
import json, openai
client = openai.OpenAI()
results = []
for _ in range(5):
    try:
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        results.append(["ok", answer.usage.total_tokens])
    except openai.RateLimitError as exc:
        results.append([exc.status_code, exc.response.json()["limit"]])
print(json.dumps(results))
"""


async def test_run_max_requests_lets_three_calls_through_and_refuses_the_rest(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    rig = await provider_rig(tmp_path, aiohttp_client, aiohttp_server)
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    code, out, err = await run_vaultd(
        rig.env(),
        "run",
        "--service",
        "openai",
        "--max-requests",
        "3",
        "--",
        sys.executable,
        str(script),
    )
    assert code == 0, err
    assert json.loads(out) == [["ok", 20]] * 3 + [[429, "session.max_requests"]] * 2
    assert len(rig.calls) == 3
    refusals = [row["refusal"] for row in await rig.audit()]
    # Five requests in all: the SDK did not retry the refused ones.
    assert refusals == [None] * 3 + ["limit-exceeded session.max_requests"] * 2


async def test_run_refuses_a_bad_limit_in_one_line_before_running_anything(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    env = (await provider_rig(tmp_path, aiohttp_client, aiohttp_server)).env()
    marker = tmp_path / "ran"
    for flag, value, says in (
        ("--max-requests", "0", "--max-requests must be a positive integer"),
        ("--max-requests", "-3", "--max-requests must be a whole number, not '-3'"),
        ("--max-requests", "2.5", "--max-requests must be a whole number"),
        ("--max-requests", "5_000", "--max-requests must be a whole number"),
        ("--max-tokens", "9223372036854775808", "--max-tokens must be at most"),
        ("--max-cost", "abc", "--max-cost must be a number of US dollars"),
        ("--max-cost", "nan", "--max-cost must be a number of US dollars"),
        ("--max-cost", "0.0000001", "--max-cost must be from 0.000001 to"),
        ("--rpm", "1e3", "--rpm must be a whole number"),
    ):
        code, _out, err = await run_vaultd(env, "run", flag, value, "--", "touch", str(marker))
        # A usage error (exit 2), its last line saying what is wrong; nothing ran.
        assert code == 2, (flag, value, err)
        assert err.strip().splitlines()[-1] == f"Error: {says}" or says in err, err
        assert "Traceback" not in err
        assert not marker.exists()
