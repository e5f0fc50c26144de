"""Metering through the proxy (DESIGN 10): each provider's answer shape, JSON and SSE.

A fake provider on 127.0.0.1 answers as the real APIs do; the audit row must
then hold the model and the exact token counts it reported, and a cost equal
to genai-prices' own calculation (the data set vaultd's table is made from).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import genai_prices
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.support.http import bearer, problem
from tests.support.providers import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    Call,
    Client,
    ProviderRig,
    anthropic_events,
    openai_chunks,
    provider_rig,
)


@dataclass
class Rig:
    """The provider rig, and one token used by every request of a test."""

    rig: ProviderRig
    token: str

    @property
    def client(self) -> Client:
        return self.rig.client

    @property
    def calls(self) -> list[Call]:
        return self.rig.calls

    async def post(self, path: str, body: Any, **headers: str) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            path,
            data=data,
            headers={**bearer(self.token), "Content-Type": "application/json", **headers},
        )

    async def last_row(self) -> sqlite3.Row:
        return (await self.rig.audit())[-1]


@pytest.fixture
async def rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Rig:
    rig = await provider_rig(tmp_path, aiohttp_client, aiohttp_server, extra="")
    return Rig(rig, rig.mint())


def genai_cost(provider: str, model: str, *, cache_read: int = 0) -> float:
    usage = genai_prices.Usage(
        input_tokens=PROMPT_TOKENS + (cache_read if provider == "anthropic" else 0),
        output_tokens=COMPLETION_TOKENS,
        cache_read_tokens=cache_read,
    )
    price = genai_prices.calc_price(usage, model_ref=model, provider_id=provider)
    return float(price.total_price)


def assert_metered(
    row: sqlite3.Row, model: str, input_tokens: int, cached: int, cost: float
) -> None:
    assert row["model"] == model
    assert (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]) == (
        input_tokens,
        COMPLETION_TOKENS,
        cached,
    )
    assert row["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert row["refusal"] is None


async def test_openai_json_answer_is_metered(rig: Rig) -> None:
    model = "gpt-4o-mini-2024-07-18"
    response = await rig.post("/proxy/openai/v1/chat/completions", {"model": model})
    assert response.status == 200
    assert (await response.json())["usage"]["prompt_tokens"] == PROMPT_TOKENS
    row = await rig.last_row()
    cost = genai_cost("openai", model, cache_read=CACHED_TOKENS)
    assert_metered(row, model, PROMPT_TOKENS, CACHED_TOKENS, cost)


async def test_openai_stream_without_usage_is_asked_for_it_and_the_client_sees_its_own_stream(
    rig: Rig,
) -> None:
    model = "gpt-4o-mini"
    response = await rig.post(
        "/proxy/openai/v1/chat/completions", {"model": model, "stream": True, "messages": []}
    )
    assert response.status == 200
    received = await response.read()
    # Byte for byte the stream OpenAI sends a request without include_usage.
    assert received == "".join(openai_chunks(model, include_usage=False)).encode()
    sent = rig.calls[-1].json()
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [] and sent["model"] == model
    row = await rig.last_row()
    cost = genai_cost("openai", model, cache_read=CACHED_TOKENS)
    assert_metered(row, model, PROMPT_TOKENS, CACHED_TOKENS, cost)


async def test_openai_stream_that_asked_for_usage_is_passed_unchanged(rig: Rig) -> None:
    model = "gpt-4o-mini"
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    raw = json.dumps(body).encode()
    response = await rig.post("/proxy/openai/v1/chat/completions", raw)
    assert await response.read() == "".join(openai_chunks(model, include_usage=True)).encode()
    assert rig.calls[-1].body == raw  # not even re-serialised
    row = await rig.last_row()
    assert row["input_tokens"] == PROMPT_TOKENS


async def test_a_stream_body_that_cannot_be_read_is_forwarded_untouched_and_unmetered(
    rig: Rig,
) -> None:
    # A key twice: which one the upstream takes is its business, so vaultd
    # neither rewrites nor meters it.
    raw = b'{"model": "gpt-4o-mini", "stream": false, "stream": true}'
    response = await rig.post("/proxy/openai/v1/chat/completions", raw)
    assert response.status == 200
    await response.read()
    assert rig.calls[-1].body == raw
    row = await rig.last_row()
    assert row["input_tokens"] is None and row["cost_usd"] is None
    # Under a token budget the same request is refused before it goes anywhere.
    rig.token = rig.rig.mint(limits={"max_tokens": 10**6})
    response = await rig.post("/proxy/openai/v1/chat/completions", raw)
    await problem(response, 403, "unmeterable")
    assert len(rig.calls) == 1


async def test_anthropic_json_and_stream_are_metered(rig: Rig) -> None:
    model = "claude-sonnet-4-5-20250929"
    cost = genai_cost("anthropic", model, cache_read=CACHED_TOKENS)
    response = await rig.post("/proxy/anthropic/v1/messages", {"model": model, "max_tokens": 9})
    assert response.status == 200
    await response.read()
    # Anthropic's input_tokens leaves out the cache reads; vaultd counts all input.
    assert_metered(await rig.last_row(), model, PROMPT_TOKENS + CACHED_TOKENS, CACHED_TOKENS, cost)
    response = await rig.post(
        "/proxy/anthropic/v1/messages", {"model": model, "max_tokens": 9, "stream": True}
    )
    assert await response.read() == "".join(anthropic_events(model)).encode()
    assert_metered(await rig.last_row(), model, PROMPT_TOKENS + CACHED_TOKENS, CACHED_TOKENS, cost)


async def test_gemini_json_and_sse_are_metered(rig: Rig) -> None:
    model = "gemini-2.5-flash"
    cost = genai_cost("google", model)
    for path in (
        f"/proxy/gemini/v1beta/models/{model}:generateContent",
        f"/proxy/gemini/v1beta/models/{model}:streamGenerateContent?alt=sse",
    ):
        response = await rig.post(path, {"contents": []})
        assert response.status == 200, await response.text()
        await response.read()
        assert_metered(await rig.last_row(), model, PROMPT_TOKENS, 0, cost)


async def test_an_error_answer_costs_nothing(rig: Rig) -> None:
    response = await rig.post("/proxy/openai/v1/bad", {"model": "gpt-4o-mini"})
    assert response.status == 400
    await response.read()
    row = await rig.last_row()
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (0, 0, 0.0)


async def test_an_answer_without_usage_is_unmetered(rig: Rig) -> None:
    response = await rig.client.get("/proxy/openai/v1/models", headers=bearer(rig.token))
    assert response.status == 200
    row = await rig.last_row()
    assert row["input_tokens"] is None and row["model"] is None and row["cost_usd"] is None


async def test_an_unknown_model_is_counted_without_a_cost(rig: Rig) -> None:
    response = await rig.post("/proxy/openai/v1/chat/completions", {"model": "my-own-finetune"})
    await response.read()
    row = await rig.last_row()
    assert row["input_tokens"] == PROMPT_TOKENS and row["cost_usd"] is None


async def test_the_official_sdk_streams_as_if_vaultd_had_not_asked_for_usage(rig: Rig) -> None:
    base = str(rig.client.make_url("/proxy/openai/v1"))
    with openai.OpenAI(base_url=base, api_key=rig.token, max_retries=0) as sdk:

        def stream(**extra: Any) -> list[Any]:
            chunks = sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                **extra,
            )
            return list(chunks)

        plain = await asyncio.to_thread(stream)
        asked = await asyncio.to_thread(stream, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "Hello there!"
    # Not one chunk carries usage, and none is the usage-only one (no choices).
    assert all(c.usage is None and c.choices for c in plain)
    rows = await rig.rig.audit()
    assert [row["output_tokens"] for row in rows] == [COMPLETION_TOKENS] * 2
    assert asked[-1].choices == [] and asked[-1].usage.prompt_tokens == PROMPT_TOKENS
