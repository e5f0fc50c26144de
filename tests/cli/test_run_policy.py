"""`vaultd run` with a request policy, as a user runs it: a real process, the official SDK in it."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.daemon import run_vaultd
from tests.support.providers import provider_rig

# The allowed call, a call with another model, and a call to another endpoint.
SCRIPT = """
import json, openai
client = openai.OpenAI()
results = []
def chat(model):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
for call in (lambda: chat("gpt-4o-mini"), lambda: chat("gpt-4o"), lambda: client.models.list()):
    try:
        call()
        results.append("ok")
    except openai.PermissionDeniedError as exc:
        results.append([exc.status_code, exc.message])
client.close()
print(json.dumps(results))
"""


async def test_run_with_a_model_and_an_allow_rule_lets_only_that_call_through(
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
        "--model",
        "gpt-4o-mini",
        "--allow",
        "POST /v1/chat/completions",
        "--",
        sys.executable,
        str(script),
    )
    assert code == 0, err
    allowed, other_model, listing = json.loads(out)
    assert allowed == "ok"
    # The SDK's exception says why: the problem's error object (DESIGN 5).
    assert other_model == [403, 'Error code: 403 - model "gpt-4o" is not in the allowed models']
    assert listing == [403, "Error code: 403 - no allow rule matches GET /v1/models"]
    assert [(call.method, call.path) for call in rig.calls] == [("POST", "/v1/chat/completions")]
    assert rig.calls[0].json()["model"] == "gpt-4o-mini"
    refusals = [row["refusal"] for row in await rig.audit()]
    assert refusals == [None, "policy-denied", "policy-denied"]
    # `vaultd audit` shows the refusals.
    code, out, err = await run_vaultd(rig.env(), "audit")
    assert code == 0, err
    assert out.count("policy-denied") == 2, out


async def test_run_refuses_a_bad_rule_in_one_line_before_running_anything(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    env = (await provider_rig(tmp_path, aiohttp_client, aiohttp_server)).env()
    marker = tmp_path / "ran"
    code, _out, err = await run_vaultd(env, "run", "--allow", "POST", "--", "touch", str(marker))
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (
        'Error: --allow \'POST\': a rule needs a path, as in "GET /v1/**" or "* /**"'
    )
    assert not marker.exists()
