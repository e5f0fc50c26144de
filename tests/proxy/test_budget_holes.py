"""Ways around a token or cost budget, each closed (found by a hostile review of DESIGN 10).

Each test is what an agent holding only its token would try; each must end
with the budget holding, nothing billed going upstream unseen, and the
daemon answering problems, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support.http import bearer, problem
from tests.support.providers import CHAT, Client, ProviderRig, provider_rig
from tests.support.upstream import OPENAI_KEY
from vaultd.core.limits import COUNT_CEILING
from vaultd.core.sessions import Session, Used
from vaultd.http.appkeys import VAULT
from vaultd.models import Credential
from vaultd.proxy import forward, settling
from vaultd.proxy.counters import Counters
from vaultd.proxy.routes import FORWARDER


@pytest.fixture
async def rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> ProviderRig:
    return await provider_rig(tmp_path, aiohttp_client, aiohttp_server, gap=0.05)


async def used(rig: ProviderRig, token: str) -> Any:
    session = rig.client.app[VAULT].sessions.authenticate(token)
    admin = rig.mint(scopes=["read"])
    listed = await (await rig.client.get("/api/sessions", headers=bearer(admin))).json()
    return next(s for s in listed if s["id"] == session.id)["used"]


async def test_leaving_a_stream_before_its_usage_is_charged_an_estimate(
    rig: ProviderRig,
) -> None:
    token = rig.mint(limits={"max_tokens": 20})
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as client:
        response = await client.post(rig.client.make_url(CHAT), json=body, headers=bearer(token))
        got = b""
        for _ in range(50):  # read into the answer, then leave before the usage chunk
            got += await response.content.readany()
            if b"there" in got:
                break
        response.close()
    assert b"there" in got
    for _ in range(100):  # at most 5 s: the daemon notices at its next write
        if (await used(rig, token))["tokens"]:
            break
        await asyncio.sleep(0.05)
    # Charged on the high side (a token per 4 bytes sent and received), not 0.
    assert (await used(rig, token))["tokens"] > 20
    await problem(await rig.chat(token), 429, "limit-exceeded")
    assert len(rig.calls) == 1
    (row,) = [r for r in await rig.audit() if r["refusal"] is None]
    assert row["status"] == 499 and row["input_tokens"] is None


async def test_an_answer_too_large_to_meter_is_charged_an_estimate(rig: ProviderRig) -> None:
    token = rig.mint(limits={"max_tokens": 100_000})
    response = await rig.client.post(
        CHAT + "?pad=5000000", json={"model": "gpt-test", "messages": []}, headers=bearer(token)
    )
    assert response.status == 200
    assert len(await response.read()) > 5_000_000
    assert (await used(rig, token))["tokens"] > 1_000_000
    await problem(await rig.chat(token), 429, "limit-exceeded")
    # Without a budget the same answer is simply unmetered: nothing estimated.
    free = rig.mint()
    response = await rig.client.post(
        CHAT + "?pad=5000000", json={"model": "gpt-test", "messages": []}, headers=bearer(free)
    )
    await response.read()
    assert (await used(rig, free))["tokens"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": "f"}),
        ("POST", "/v1/images/generations", {"prompt": "a cat"}),
        ("POST", "/v1/audio/speech", {"input": "hello"}),
        ("POST", "/v1/realtime/client_secrets", {}),
        ("POST", "/v1/batches", {"input_file_id": "f"}),
        ("POST", "/v1/responses", {"model": "gpt-4o", "input": "hi", "background": True}),
        ("POST", "/v1/responses", b'{"model": "gpt-4o", "background": false, "background": 1}'),
        ("PUT", "/v1/chat/completions", {"model": "gpt-4o"}),
    ],
)
async def test_billed_requests_that_report_no_usage_are_refused_under_a_budget(
    rig: ProviderRig, method: str, path: str, body: Any
) -> None:
    token = rig.mint(limits={"max_cost_usd": 0.01})
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await rig.client.request(
        method,
        "/proxy/openai" + path,
        data=data,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    await problem(response, 403, "unmeterable")
    assert rig.calls == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models", None),
        ("POST", "/v1/moderations", {"input": "hi"}),
        ("POST", "/v1/responses", {"model": "gpt-4o", "input": "hi"}),
        ("DELETE", "/v1/files/file-1", None),
    ],
)
async def test_free_and_reporting_requests_pass_a_budget(
    rig: ProviderRig, method: str, path: str, body: Any
) -> None:
    token = rig.mint(limits={"max_cost_usd": 0.01})
    response = await rig.client.request(
        method, "/proxy/openai" + path, json=body, headers=bearer(token)
    )
    assert response.status != 403, await response.text()
    assert len(rig.calls) == 1


async def test_a_credentials_daily_token_cap_holds_for_sessions_without_limits(
    rig: ProviderRig,
) -> None:
    admin = rig.mint(scopes=["admin"])
    for ref in ("openai/primary", "github/gh"):
        response = await rig.client.patch(
            f"/api/credentials/{rig.ids[ref]}",
            json={"limits": {"max_tokens_per_day": 1000}},
            headers=bearer(admin),
        )
        assert response.status == 200
    token = rig.mint()  # no limits of its own
    unreadable = b'{"model": "gpt-test", "stream": false, "stream": true}'
    response = await rig.client.post(
        CHAT, data=unreadable, headers={**bearer(token), "Content-Type": "application/json"}
    )
    await problem(response, 403, "unmeterable")
    await problem(
        await rig.client.get("/proxy/github/user", headers=bearer(token)), 403, "unmeterable"
    )
    assert rig.calls == []
    assert (await rig.chat(token)).status == 200


async def test_add_stream_usage_off_refuses_streams_without_usage_under_a_budget(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    rig = await provider_rig(
        tmp_path, aiohttp_client, aiohttp_server, extra="[metering]\nadd_stream_usage = false\n"
    )
    stream = {"model": "gpt-test", "stream": True, "messages": []}
    await problem(
        await rig.chat(rig.mint(limits={"max_tokens": 1000}), **stream), 403, "unmeterable"
    )
    # A stream that asks for its usage itself is metered; without a budget,
    # one that does not goes through untouched.
    budget = rig.mint(limits={"max_tokens": 1000})
    asked = {**stream, "stream_options": {"include_usage": True}}
    assert (await rig.chat(budget, **asked)).status == 200
    response = await rig.chat(rig.mint(), **stream)
    assert response.status == 200
    await response.read()
    assert "stream_options" not in rig.calls[-1].json()


async def test_a_refusal_before_sending_does_not_count(rig: ProviderRig) -> None:
    token = rig.mint(limits={"max_requests": 2, "max_tokens": 10**6})
    unreadable = b'{"model": "gpt-test", "stream": true, "stream": true}'
    for _ in range(3):
        response = await rig.client.post(
            CHAT, data=unreadable, headers={**bearer(token), "Content-Type": "application/json"}
        )
        await problem(response, 403, "unmeterable")
    assert [(await rig.chat(token)).status for _ in range(3)] == [200, 200, 429]
    assert (await used(rig, token))["requests"] == 2


async def test_a_key_the_upstream_echoes_as_the_model_is_not_recorded(rig: ProviderRig) -> None:
    token = rig.mint()
    response = await rig.client.post(
        CHAT + "?echo_key=1", json={"model": "gpt-test", "messages": []}, headers=bearer(token)
    )
    assert OPENAI_KEY not in await response.text()  # redacted on the way out
    (row,) = await rig.audit()
    assert row["model"] is None and row["input_tokens"] == 12
    reader = rig.mint(scopes=["read"])
    for path in ("/api/audit", "/api/usage?by=model"):
        answer = await rig.client.get(path, headers=bearer(reader))
        assert OPENAI_KEY not in await answer.text()


async def test_huge_counts_saturate_and_never_wedge_the_usage_writer(rig: ProviderRig) -> None:
    token = rig.mint()
    for _ in range(4):  # 4 * (2**53 - 1) is past what SQLite's INTEGER holds
        response = await rig.client.post(
            CHAT + "?huge=1", json={"model": "gpt-test", "messages": []}, headers=bearer(token)
        )
        assert response.status == 200
        await response.read()
    rows = await rig.audit()
    assert len(rows) == 4 and all(r["input_tokens"] == 2**53 - 1 for r in rows)
    conn = sqlite3.connect(rig.config.db_path)
    (stored,) = conn.execute("SELECT used_tokens FROM sessions WHERE used_requests = 4").fetchone()
    conn.close()
    assert stored == COUNT_CEILING
    # The writer goes on writing.
    assert (await rig.chat(token)).status == 200
    assert len(await rig.audit()) == 5


@pytest.mark.parametrize(
    ("column", "value"),
    [("used_cost_usd", float("inf")), ("used_tokens", "lots"), ("used_requests", -5)],
)
async def test_a_damaged_count_in_the_file_reads_as_zero(
    rig: ProviderRig, column: str, value: object
) -> None:
    token = rig.mint(limits={"max_cost_usd": 1.0})
    conn = sqlite3.connect(rig.config.db_path)
    with conn:
        conn.execute(f"UPDATE sessions SET {column} = ?", [value])  # noqa: S608
    conn.close()
    reader = rig.mint(scopes=["read"])
    listed = await rig.client.get("/api/sessions", headers=bearer(reader))
    assert listed.status == 200
    json.loads(await listed.text())  # strict JSON: no Infinity
    assert (await rig.chat(token)).status == 200


def test_an_rpm_window_is_dropped_when_the_limit_is(tmp_path: Path) -> None:
    counters = Counters(
        load_session=lambda _id: Used(0, 0, 0.0),
        load_day=lambda _id, _day: Used(0, 0, 0.0),
        load_recent=lambda _id, _since: [],
    )
    credential = Credential("c", "openai", "k", "api_key", None, {}, True, 0, 0, None, 0, None)
    limited = Session("s", "n", "p", ("proxy",), ("*",), 0, None, None, None, {"rpm": 10**6})
    for _ in range(5):
        counters.charge(counters.admit(limited, credential, in_flight=0), 0, None)
    assert len(counters._sessions["s"].window or ()) == 5
    unlimited = Session("s", "n", "p", ("proxy",), ("*",), 0, None, None, None, None)
    for _ in range(1000):
        counters.charge(counters.admit(unlimited, credential, in_flight=0), 0, None)
    assert counters._sessions["s"].window is None


# -- requests settled behind, once per turn of the event loop ----------------------------


@pytest.fixture
async def unsettled(rig: ProviderRig, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The turn of the loop that would settle requests put behind never comes: only a
    flush settles them. (The list: each time that turn was asked for.)"""
    settle_behind = rig.client.app[FORWARDER].settle_behind
    loop = asyncio.get_running_loop()
    real_call_soon = loop.call_soon
    asked: list[object] = []

    def call_soon(callback: Any, *args: Any, **kw: Any) -> Any:
        if callback == settle_behind:
            asked.append(callback)
            return None
        return real_call_soon(callback, *args, **kw)

    monkeypatch.setattr(loop, "call_soon", call_soon)
    return asked


async def test_a_flush_writes_requests_not_yet_settled(
    rig: ProviderRig, unsettled: list[object]
) -> None:
    """A request without a budget is settled in the next turn of the loop; a flush
    before that turn (the last one at shutdown, say) still writes its row."""
    token = rig.mint()
    response = await rig.chat(token)
    assert response.status == 200
    await response.read()
    assert unsettled and (await used(rig, token))["tokens"] == 0  # ended, not yet settled
    (row,) = await rig.audit()  # the flush settles it first
    assert (row["model"], row["input_tokens"], row["status"]) == ("gpt-test", 12, 200)
    assert (await used(rig, token))["tokens"] == 20


async def test_one_request_that_cannot_be_settled_costs_no_other_its_row(
    rig: ProviderRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = rig.mint()
    real_settle = settling.settle
    calls = 0

    def settle_once_broken(*args: Any) -> float | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"a message that holds {OPENAI_KEY}")
        return real_settle(*args)

    monkeypatch.setattr(forward, "settle", settle_once_broken)
    statuses = [r.status for r in await asyncio.gather(*(rig.chat(token) for _ in range(4)))]
    assert statuses == [200] * 4
    rows = await rig.audit()
    assert len(rows) == 3 and all(row["input_tokens"] == 12 for row in rows)
    assert "could not settle a proxied request: RuntimeError request=" in caplog.text
    assert OPENAI_KEY not in caplog.text


async def test_under_a_budget_a_request_is_charged_before_its_handler_ends(
    rig: ProviderRig, unsettled: list[object]
) -> None:
    """The next request of a session with a cost or token limit is admitted against
    what the one before cost: nothing of it waits for the loop's next turn."""
    token = rig.mint(limits={"max_tokens": 10**6})
    response = await rig.chat(token)
    await response.read()
    assert not unsettled
    assert (await used(rig, token))["tokens"] == 20
