"""``GET /api/usage`` through a real socket: groupings, windows, bad queries, scopes.

Most tests read rows written with the store's insert statements
(tests/support/audit.py); the last sends real requests through the proxy to a
fake provider and reads what the proxy's own usage writer recorded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.audit import (
    DAY1,
    DAY2,
    audit_row,
    expected_groups,
    insert_audit,
    new_ids,
    sample_rows,
)
from tests.support.http import Mint, bearer, problem
from tests.support.providers import COMPLETION_TOKENS, PROMPT_TOKENS, TEST_COST, provider_rig
from vaultd.core.vault import Vault
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE
from vaultd.store.usage import USAGE_BY

IDS = new_ids()


async def usage(client: TestClient[Any, Any], token: str, query: str = "") -> Any:
    response = await client.get(f"/api/usage{query}", headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.fixture
def sampled(api_vault: Vault) -> Vault:
    insert_audit(api_vault.db, sample_rows(IDS))
    return api_vault


@pytest.mark.parametrize("by", USAGE_BY)
async def test_each_grouping(
    api_client: TestClient[Any, Any], sampled: Vault, mint: Mint, by: str
) -> None:
    groups = await usage(api_client, mint("read"), f"?by={by}")
    # Every field of every group, in the order the API lists groups.
    assert groups == expected_groups(IDS)[by]


async def test_by_day_is_the_default(
    api_client: TestClient[Any, Any], sampled: Vault, mint: Mint
) -> None:
    assert await usage(api_client, mint("read")) == expected_groups(IDS)["day"]


async def test_since_and_until_as_unix_seconds_and_durations(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    token = mint("read")
    day1, day2 = expected_groups(IDS)["day"]
    insert_audit(api_vault.db, sample_rows(IDS))
    assert await usage(api_client, token, f"?since={DAY2}") == [day2]
    assert await usage(api_client, token, f"?until={DAY2}") == [day1]
    assert await usage(api_client, token, f"?since={DAY1}&until={DAY2 + 86_400}") == [day1, day2]
    # Durations count back from now: the sample days are long past.
    at = int(time.time())
    insert_audit(api_vault.db, [audit_row(at - 3600, model="recent"), audit_row(at - 5 * 86_400)])
    recent = await usage(api_client, token, "?by=model&since=2h")
    assert [(g["key"], g["requests"]) for g in recent] == [("recent", 1)]
    older = await usage(api_client, token, "?by=model&since=7d&until=1d")
    assert [(g["key"], g["requests"]) for g in older] == [(None, 1)]
    assert await usage(api_client, token, "?since=30m") == []
    assert len(await usage(api_client, token, "?since=1h30m")) == 1


@pytest.mark.parametrize(
    ("query", "pointers"),
    [
        ("?by=week", ["/by"]),
        ("?by=", ["/by"]),
        ("?by=DAY", ["/by"]),
        ("?by=day&by=model", ["/by"]),
        ("?since=yesterday", ["/since"]),
        ("?since=-5", ["/since"]),
        ("?since=1.5", ["/since"]),
        ("?since=9999999999999", ["/since"]),  # 13 digits
        ("?since=5300w", ["/since"]),  # past 100 years
        ("?until=%E2%91%A0", ["/until"]),  # a digit, but not 0-9
        ("?since=200&until=100", ["/until"]),
        ("?since=100&until=100", ["/until"]),
        ("?since=1h&until=2h", ["/until"]),
        ("?limit=5", ["/limit"]),
        ("?by=x&since=y&until=z", ["/by", "/since", "/until"]),
        # Unknown parameters are refused first, on their own.
        ("?by=x&service=openai", ["/service"]),
    ],
)
async def test_bad_queries_are_422_naming_each_parameter(
    api_client: TestClient[Any, Any], mint: Mint, query: str, pointers: list[str]
) -> None:
    response = await api_client.get(f"/api/usage{query}", headers=bearer(mint("read")))
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == pointers


async def test_needs_the_read_scope(api_client: TestClient[Any, Any], mint: Mint) -> None:
    await problem(await api_client.get("/api/usage"), 401, "unauthorized")
    response = await api_client.get("/api/usage", headers=bearer(mint("proxy")))
    await problem(response, 403, "forbidden")
    for scopes in (("read",), ("admin",)):
        response = await api_client.get("/api/usage", headers=bearer(mint(*scopes)))
        assert response.status == 200


# -- through the proxy: what its own usage writer records -------------------------


async def test_what_the_proxy_records_is_summed(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    rig = await provider_rig(tmp_path, aiohttp_client, aiohttp_server)
    client, vault, ids, calls = rig.client, rig.client.app[VAULT], rig.ids, rig.calls
    worker_token = rig.mint(name="worker", services=["openai", "github"])
    capped_token = rig.mint(services=["anthropic"], limits={"max_requests": 1})
    worker, capped = (vault.sessions.authenticate(t).id for t in (worker_token, capped_token))
    chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        response = await client.post(
            "/proxy/openai/v1/chat/completions", json=chat, headers=bearer(worker_token)
        )
        assert response.status == 200, await response.text()
        await response.read()
    # Went upstream (the provider's 404), but github's use is not metered.
    response = await client.get("/proxy/github/user", headers=bearer(worker_token))
    assert response.status == 404
    # Refused before anything went upstream: not counted.
    await problem(
        await client.post("/proxy/anthropic/v1/messages", json={}, headers=bearer(worker_token)),
        403,
        "forbidden",
    )
    message = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}
    for status in (200, 429):
        response = await client.post(
            "/proxy/anthropic/v1/messages", json=message, headers=bearer(capped_token)
        )
        assert response.status == status, await response.text()
        await response.read()
    assert len(calls) == 4
    await client.app[USAGE].flush()

    reader = rig.mint(scopes=["read"])
    by_session = {g["key"]: g for g in await usage(client, reader, "?by=session")}
    assert set(by_session) == {worker, capped}
    assert (by_session[worker]["requests"], by_session[worker]["unmetered_requests"]) == (3, 1)
    assert (by_session[capped]["requests"], by_session[capped]["unmetered_requests"]) == (1, 0)
    by_model = {g["key"]: g for g in await usage(client, reader, "?by=model")}
    gpt = by_model["gpt-test"]
    assert (gpt["requests"], gpt["input_tokens"], gpt["output_tokens"]) == (
        2,
        2 * PROMPT_TOKENS,
        2 * COMPLETION_TOKENS,
    )
    assert gpt["cost_usd"] == pytest.approx(2 * TEST_COST)
    assert by_model[None]["requests"] == 1
    by_credential = {g["key"]: g["requests"] for g in await usage(client, reader, "?by=credential")}
    assert by_credential == {
        ids["openai/primary"]: 2,
        ids["github/gh"]: 1,
        ids["anthropic/main"]: 1,
    }
    # Every request is in the audit log, the refused ones too.
    audit = await client.get("/api/audit", headers=bearer(reader))
    refusals = sorted(str(row["refusal"]) for row in await audit.json())
    assert refusals == ["None"] * 4 + ["forbidden", "limit-exceeded session.max_requests"]
