"""A fake upstream that answers as OpenAI, Anthropic and Gemini do, usage included.

Real HTTP on 127.0.0.1. The shapes follow the providers' API references: an
OpenAI stream carries ``"usage":null`` on every chunk and ends with a
usage-only chunk (``"choices":[]``) only when the request asked for
``stream_options.include_usage``, as api.openai.com does; Anthropic's stream
is message_start ... message_delta ... message_stop; Gemini's ``alt=sse``
stream repeats ``usageMetadata`` on each chunk. It records every request, so
a test can say how many went upstream and with what body.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.config import write_proxy_config
from tests.support.http import DaemonTestServer, bearer, mint_token
from tests.support.upstream import seed_vault, vaultd_for
from vaultd.config import Config
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE

# What every answer reports using (a test reads these back from the audit row).
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 8
CACHED_TOKENS = 4
WORDS = ("Hello", " there", "!")


def _compact(value: object) -> str:
    # As the providers serialise: no spaces.
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Call:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


async def _sse(request: web.Request, events: list[str], gap: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    for event in events:
        await response.write(event.encode())
        if gap:
            await asyncio.sleep(gap)
    await response.write_eof()
    return response


def openai_chunks(model: str, *, include_usage: bool) -> list[str]:
    """A chat completion stream as OpenAI sends it, with or without include_usage."""
    base = {"id": "chatcmpl-B9", "object": "chat.completion.chunk", "created": 1, "model": model}
    extra = {"usage": None} if include_usage else {}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": word} for word in WORDS]
    events = []
    for i, delta in enumerate([*deltas, {}]):
        finish = "stop" if i == len(deltas) else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        events.append(f"data: {_compact({**base, 'choices': [choice], **extra})}\n\n")
    if include_usage:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        events.append(f"data: {_compact({**base, 'choices': [], 'usage': usage})}\n\n")
    events.append("data: [DONE]\n\n")
    return events


def openai_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
    }


def anthropic_events(model: str) -> list[str]:
    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {_compact({'type': name, **data})}\n\n"

    usage = {
        "input_tokens": PROMPT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CACHED_TOKENS,
        "output_tokens": 1,
    }
    message: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [event("message_start", {"message": message})]
    events.append(
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    )
    events.append(event("ping", {}))
    for word in WORDS:
        events.append(
            event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}
            )
        )
    events.append(event("content_block_stop", {"index": 0}))
    events.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
        )
    )
    events.append(event("message_stop", {}))
    return events


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(WORDS)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": CACHED_TOKENS,
            "output_tokens": COMPLETION_TOKENS,
        },
    }


def gemini_chunk(model: str, text: str, final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": COMPLETION_TOKENS,
            "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
        },
        "modelVersion": model,
        "responseId": "resp-1",
    }


def provider_app(calls: list[Call], *, gap: float = 0.0) -> web.Application:
    """OpenAI, Anthropic and Gemini endpoints in one app (each service's base_url is it)."""

    async def record(request: web.Request) -> Call:
        call = Call(request.method, request.path_qs, await request.read(), dict(request.headers))
        calls.append(call)
        return call

    async def chat(request: web.Request) -> web.StreamResponse:
        """Chat completions; as a hostile or odd upstream with ``?echo_key=1`` (the key as
        the model), ``?huge=1`` (the largest counts a reader takes), ``?pad=N`` (N bytes
        more content)."""
        call = await record(request)
        body = call.json()
        model = body.get("model", "gpt-4o-mini")
        if request.query.get("echo_key"):
            model = call.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.query.get("huge") or request.query.get("pad"):
            answer = openai_completion(model)
            if request.query.get("huge"):
                answer["usage"] = {"prompt_tokens": 2**53 - 1, "completion_tokens": 0}
            answer["choices"][0]["message"]["content"] = "x" * int(request.query.get("pad", 0))
            return web.json_response(answer)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return await _sse(
                request, openai_chunks(model, include_usage=bool(options.get("include_usage"))), gap
            )
        if gap:
            await asyncio.sleep(gap)
        return web.json_response(openai_completion(model))

    async def messages(request: web.Request) -> web.StreamResponse:
        body = (await record(request)).json()
        model = body.get("model", "claude-sonnet-4-5")
        if body.get("stream"):
            return await _sse(request, anthropic_events(model), gap)
        return web.json_response(anthropic_message(model))

    async def gemini(request: web.Request) -> web.StreamResponse:
        await record(request)
        model, _, method = request.match_info["target"].partition(":")
        if method == "streamGenerateContent":
            words = list(WORDS)
            events = [
                f"data: {_compact(gemini_chunk(model, w, i == len(words) - 1))}\r\n\r\n"
                for i, w in enumerate(words)
            ]
            return await _sse(request, events, gap)
        return web.json_response(gemini_chunk(model, "".join(WORDS), True))

    async def models(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini"}]})

    async def error(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response(
            {"error": {"message": "bad", "type": "invalid_request_error"}}, status=400
        )

    async def unknown(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"message": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1beta/models/{target}", gemini)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/bad", error)
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app


# -- vaultd in front of it --------------------------------------------------------

# A model priced by config so that one request costs a round sum:
# 12 input tokens at $10,000/Mtok + 8 output at $20,000/Mtok = $0.28 (cached
# input costs the same as input here, so how it is split does not matter).
TEST_PRICES = """
[prices."openai/gpt-test"]
input_per_mtok = 10000
output_per_mtok = 20000
cached_input_per_mtok = 10000
"""
TEST_COST = (PROMPT_TOKENS * 10_000 + COMPLETION_TOKENS * 20_000) / 1e6
CHAT = "/proxy/openai/v1/chat/completions"

Client = TestClient[web.Request, web.Application]


@dataclass
class ProviderRig:
    """vaultd (seeded vault, gemini too) in front of ``provider_app``; what the upstream got."""

    client: Client
    config: Config
    calls: list[Call]
    ids: dict[str, str]

    def mint(self, **kw: Any) -> str:
        """A proxy-only token unless ``kw`` says otherwise (``mint_token``)."""
        kw.setdefault("scopes", ["proxy"])
        return mint_token(self.client.app[VAULT], self.config, **kw)

    async def chat(self, token: str, **body: Any) -> ClientResponse:
        body.setdefault("model", "gpt-test")
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return await self.client.post(CHAT, json=body, headers=bearer(token))

    async def flush(self) -> None:
        await self.client.app[USAGE].flush()

    async def audit(self) -> list[sqlite3.Row]:
        """Every audit row, oldest first, after a flush."""
        await self.flush()
        conn = sqlite3.connect(self.config.db_path)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        """The environment of a `vaultd` process that uses this rig's daemon."""
        assert self.config.config_file is not None
        return {
            **os.environ,
            "VAULTD_CONFIG": str(self.config.config_file),
            "VAULTD_URL": str(self.client.make_url("")).rstrip("/"),
        }


async def provider_rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    *,
    gap: float = 0.0,
    extra: str = TEST_PRICES,
    max_request_body: int | None = None,
) -> ProviderRig:
    """``max_request_body``: bytes, instead of the test config's 64 KiB (for bodies
    larger than ``[policy] max_inspect_body``)."""
    calls: list[Call] = []
    upstream = await aiohttp_server(provider_app(calls, gap=gap), host="127.0.0.1")
    url = f"http://127.0.0.1:{upstream.port}"
    extra += f'\n[services.gemini]\nbase_url = "{url}"\n'
    if max_request_body is None:
        client, config, ids = await vaultd_for(url, tmp_path, aiohttp_client, extra)
    else:
        # As ``vaultd_for``, the limit changed before the app is built on it.
        written = write_proxy_config(tmp_path / "config.toml", url, extra)
        config = replace(written, max_request_body=max_request_body)
        ids = seed_vault(config)
        client = await aiohttp_client(DaemonTestServer(create_app(config), host="127.0.0.1"))
    vault = client.app[VAULT]
    ids["gemini/g"] = vault.credentials.add(
        vault.unlock(), service="gemini", name="g", secret="AIzaGEMINIKEYgeminikey0008"
    ).id
    return ProviderRig(client, config, calls, ids)
