"""Session and credential limits on the proxy (DESIGN 10), against a fake provider upstream.

Every refusal is checked where it matters: the client gets the 429 (or 403)
problem with its fields, the upstream never sees the request, and the audit
log says why it was refused.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.support.http import DaemonTestServer, bearer, problem
from tests.support.providers import CHAT, Client, provider_rig
from tests.support.providers import TEST_COST as COST
from tests.support.providers import ProviderRig as Rig
from vaultd.core.limits import DAY
from vaultd.daemon.app import create_app


@pytest.fixture
async def rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Rig:
    return await provider_rig(tmp_path, aiohttp_client, aiohttp_server, gap=0.02)


async def test_max_requests_refuses_after_the_last_allowed_and_nothing_goes_upstream(
    rig: Rig,
) -> None:
    token = rig.mint(limits={"max_requests": 3})
    statuses = []
    for _ in range(5):
        response = await rig.chat(token)
        statuses.append(response.status)
        if response.status == 429:
            body = await problem(response, 429, "limit-exceeded")
            assert (body["limit"], body["max"], body["used"]) == ("session.max_requests", 3, 3)
            # A spent budget does not come back by waiting: the SDKs must not retry.
            assert response.headers["x-should-retry"] == "false"
            assert "Retry-After" not in response.headers
        else:
            await response.read()
    assert statuses == [200, 200, 200, 429, 429]
    assert len(rig.calls) == 3
    refusals = [row["refusal"] for row in await rig.audit()]
    assert refusals == [None] * 3 + ["limit-exceeded session.max_requests"] * 2


async def test_max_cost_refuses_once_the_cost_reaches_the_cap(rig: Rig) -> None:
    token = rig.mint(limits={"max_cost_usd": 1.0})
    statuses = []
    for _ in range(6):
        response = await rig.chat(token)
        statuses.append(response.status)
        await response.read()
    # 0.28 a request: after four (1.12) the cap is reached.
    assert statuses == [200] * 4 + [429] * 2
    sessions = await rig.client.get("/api/sessions", headers=bearer(rig.mint(scopes=["read"])))
    mine = [s for s in await sessions.json() if s["limits"] == {"max_cost_usd": 1.0}]
    assert mine[0]["used"] == {"requests": 4, "tokens": 80, "cost_usd": pytest.approx(4 * COST)}


async def test_concurrency_one_overshoots_a_budget_by_at_most_one_request(rig: Rig) -> None:
    token = rig.mint(limits={"max_cost_usd": 1.0, "concurrency": 1})
    ok = 0
    for _ in range(10):  # rounds of 20 parallel requests until the budget refuses all
        responses = await asyncio.gather(*(rig.chat(token) for _ in range(20)))
        statuses = [r.status for r in responses]
        bodies = [await r.json() for r in responses]
        ok += statuses.count(200)
        limits = {b["limit"] for b, s in zip(bodies, statuses, strict=True) if s == 429}
        assert limits <= {"session.concurrency", "session.max_cost_usd"}
        if all(b.get("limit") == "session.max_cost_usd" for b in bodies):
            break
    else:
        pytest.fail("the budget never refused")
    assert ok == len(rig.calls)
    # The cap is reached (1.12 after four) and passed by at most one request's cost.
    assert 1.0 <= ok * COST <= 1.0 + COST


async def test_rpm_refuses_the_sixth_in_a_minute_with_retry_after_to_the_second(
    rig: Rig,
) -> None:
    token = rig.mint(limits={"rpm": 5})
    first_sent = time.time()
    for _ in range(5):
        response = await rig.chat(token)
        assert response.status == 200
        await response.read()
    response = await rig.chat(token)
    refused_at = time.time()
    body = await problem(response, 429, "limit-exceeded")
    assert (body["limit"], body["max"], body["used"]) == ("session.rpm", 5, 5)
    retry_after = int(response.headers["Retry-After"])
    # The first request frees its place 60 s after it was admitted.
    assert math.ceil(first_sent + 60 - refused_at) <= retry_after + 1
    assert retry_after <= math.ceil(first_sent + 60 - refused_at) + 1
    assert len(rig.calls) == 5


async def test_a_service_that_cannot_be_metered_is_refused_under_a_token_budget(
    rig: Rig,
) -> None:
    token = rig.mint(limits={"max_tokens": 1000})
    response = await rig.client.get("/proxy/github/user", headers=bearer(token))
    await problem(response, 403, "unmeterable")
    # Without a token or cost budget it goes through.
    token = rig.mint(limits={"max_requests": 10})
    response = await rig.client.get("/proxy/github/user", headers=bearer(token))
    assert response.status == 404  # the fake provider has no such route: it went upstream
    assert [c.path for c in rig.calls] == ["/user"]


async def test_credential_daily_limit_refuses_until_the_next_utc_day(rig: Rig) -> None:
    admin = rig.mint(scopes=["admin"])
    response = await rig.client.patch(
        f"/api/credentials/{rig.ids['openai/primary']}",
        json={"limits": {"max_requests_per_day": 2}},
        headers=bearer(admin),
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["limits"] == {"max_requests_per_day": 2}
    token = rig.mint()
    for _ in range(2):
        response = await rig.chat(token)
        assert response.status == 200
        await response.read()
    response = await rig.chat(token)
    refused_at = time.time()
    body = await problem(response, 429, "limit-exceeded")
    assert (body["limit"], body["max"], body["used"]) == ("credential.max_requests_per_day", 2, 2)
    to_midnight = DAY - refused_at % DAY
    assert abs(int(response.headers["Retry-After"]) - to_midnight) <= 1
    # Another credential of the service is not held to it.
    response = await rig.client.post(
        CHAT,
        json={"model": "gpt-test", "messages": []},
        headers={**bearer(token), "X-Vaultd-Credential": "second"},
    )
    assert response.status == 200
    assert len(rig.calls) == 3


async def test_limits_set_on_a_live_session_apply_to_its_next_request(rig: Rig) -> None:
    admin = rig.mint(scopes=["admin", "read"])
    token = rig.mint(name="agent")
    for _ in range(2):
        assert (await rig.chat(token)).status == 200
    listed = await (await rig.client.get("/api/sessions", headers=bearer(admin))).json()
    agent = next(s for s in listed if s["name"] == "agent")
    assert agent["limits"] is None and agent["used"]["requests"] == 2
    response = await rig.client.patch(
        f"/api/sessions/{agent['id']}", json={"limits": {"max_requests": 2}}, headers=bearer(admin)
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["used"]["requests"] == 2
    await problem(await rig.chat(token), 429, "limit-exceeded")
    # Cleared, the session may go on; its use so far stays counted.
    response = await rig.client.patch(
        f"/api/sessions/{agent['id']}", json={"limits": None}, headers=bearer(admin)
    )
    assert (await response.json())["limits"] is None
    assert (await rig.chat(token)).status == 200
    assert len(rig.calls) == 3


async def test_counts_are_written_behind_and_survive_a_new_app(
    rig: Rig,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    token = rig.mint(limits={"max_requests": 4})
    for _ in range(3):
        assert (await rig.chat(token)).status == 200
    await rig.flush()
    conn = sqlite3.connect(rig.config.db_path)
    stored = conn.execute(
        "SELECT used_requests, used_tokens, used_cost_usd FROM sessions WHERE limits IS NOT NULL"
    ).fetchone()
    day = conn.execute("SELECT requests, tokens FROM credential_daily").fetchone()
    conn.close()
    assert stored == (3, 60, pytest.approx(3 * COST))
    assert day == (3, 60)
    # A second app on the same file (a restarted daemon) goes on from there.

    again = await aiohttp_client(DaemonTestServer(create_app(rig.config), host="127.0.0.1"))
    body = {"model": "gpt-test", "messages": []}
    assert (await again.post(CHAT, json=body, headers=bearer(token))).status == 200
    response = await again.post(CHAT, json=body, headers=bearer(token))
    await problem(response, 429, "limit-exceeded")


async def test_refused_requests_are_not_counted_toward_the_limits(rig: Rig) -> None:
    token = rig.mint(limits={"max_requests": 2}, services=["anthropic"])
    # Refused before the limits (a service the token may not use): not counted.
    for _ in range(3):
        await problem(await rig.chat(token), 403, "forbidden")
    for _ in range(2):
        response = await rig.client.post(
            "/proxy/anthropic/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
            headers=bearer(token),
        )
        assert response.status == 200
    assert len(rig.calls) == 2


@pytest.mark.parametrize(
    ("limits", "pointer"),
    [
        ({"max_requests": -1}, "/limits/max_requests"),
        ({"max_requests": 0}, "/limits/max_requests"),
        ({"max_requests": "5"}, "/limits/max_requests"),
        ({"max_requests": 2**63}, "/limits/max_requests"),
        ({"max_requests": 2.5}, "/limits/max_requests"),
        ({"rpm": True}, "/limits/rpm"),
        ({"max_cost_usd": -0.5}, "/limits/max_cost_usd"),
        ({"max_cost_usd": 0}, "/limits/max_cost_usd"),
        ({"max_cost_usd": 1e300}, "/limits/max_cost_usd"),
        ({"max_cost_usd": "1"}, "/limits/max_cost_usd"),
        ({"tokens": 5}, "/limits/tokens"),
        ({"max_requests_per_day": 5}, "/limits/max_requests_per_day"),
        ([1, 2], "/limits"),
    ],
)
async def test_bad_limits_are_a_422_naming_the_limit(
    rig: Rig, limits: object, pointer: str
) -> None:
    admin = rig.mint(scopes=["admin"])
    response = await rig.client.post(
        "/api/sessions", json={"name": "x", "limits": limits}, headers=bearer(admin)
    )
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]


async def test_a_body_with_nan_limits_is_refused(rig: Rig) -> None:
    admin = rig.mint(scopes=["admin"])
    response = await rig.client.post(
        "/api/sessions",
        data=b'{"name": "x", "limits": {"max_cost_usd": NaN}}',
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert json.loads(await response.text())["type"].endswith("malformed-request")


async def test_the_official_sdks_say_which_limit_was_reached(rig: Rig) -> None:
    token = rig.mint(limits={"max_requests": 1})
    base = str(rig.client.make_url("/proxy"))
    # Closed at the end: an SDK client left to the garbage collector leaves
    # its pooled socket to a ResourceWarning in whichever test runs then.
    with (
        openai.OpenAI(base_url=base + "/openai/v1", api_key=token, max_retries=0) as oai,
        anthropic.Anthropic(base_url=base + "/anthropic", api_key=token, max_retries=0) as claude,
    ):

        def chat() -> object:
            return oai.chat.completions.create(model="gpt-test", messages=[])

        def message() -> object:
            return claude.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[])

        await asyncio.to_thread(chat)
        with pytest.raises(openai.RateLimitError) as refused:
            await asyncio.to_thread(chat)
        # The SDK's own message, not a bare "Error code: 429".
        assert "session.max_requests is 1 and 1 is used" in str(refused.value)
        with pytest.raises(anthropic.RateLimitError) as refused_too:
            await asyncio.to_thread(message)
        assert "session.max_requests" in str(refused_too.value)
    assert len(rig.calls) == 1
