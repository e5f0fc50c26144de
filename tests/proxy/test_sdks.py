"""The official SDKs, pointed at vaultd with a session token as their "API key".

They run unmodified (sync httpx clients, in a worker thread) against vaultd,
which forwards to a fake upstream on 127.0.0.1 speaking each API's wire format.
The upstream must see the real key and never the token; the SDK never the key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.config import write_proxy_config
from tests.support.upstream import ANTHROPIC_KEY, OPENAI_KEY, seed_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT

Seen = list[dict[str, str]]


def fake_apis(seen: Seen) -> web.Application:
    async def sse(
        request: web.Request, events: list[tuple[str | None, object]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            line = f"event: {name}\n" if name else ""
            payload = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"{line}data: {payload}\n\n".encode())
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        body = await request.json()
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if body.get("stream"):
            chunks: list[tuple[str | None, object]] = [
                (
                    None,
                    {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": word},
                                "finish_reason": None,
                            }
                        ],
                    },
                )
                for word in ("stre", "amed")
            ]
            return await sse(request, [*chunks, (None, "[DONE]")])
        return web.json_response(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello from upstream"},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }
        )

    async def messages(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        body = await request.json()
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0},
        }
        if body.get("stream"):
            return await sse(
                request,
                [
                    ("message_start", {"type": "message_start", "message": message}),
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    ),
                    *[
                        (
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": 0,
                                "delta": {"type": "text_delta", "text": t},
                            },
                        )
                        for t in ("stre", "amed")
                    ],
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 2},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ],
            )
        return web.json_response(
            {
                **message,
                "content": [{"type": "text", "text": "hello from upstream"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 3},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    return app


@pytest.fixture
async def sdk_setup(
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> tuple[str, str, Seen]:
    seen: Seen = []
    upstream = await aiohttp_server(fake_apis(seen), host="127.0.0.1", access_log=None)
    config = write_proxy_config(tmp_path / "config.toml", f"http://127.0.0.1:{upstream.port}")
    seed_vault(config)
    app = create_app(config)
    client = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})
    _session, token = client.app[VAULT].sessions.create(
        name="sdk",
        scopes=["proxy"],
        services=["openai", "anthropic"],
        ttl=600,
        known_services=config.services,
    )
    return str(client.make_url("")).rstrip("/"), token, seen


async def test_openai_sdk_plain_and_streamed(sdk_setup: tuple[str, str, Seen]) -> None:
    vaultd_url, token, seen = sdk_setup
    sdk = openai.OpenAI(base_url=f"{vaultd_url}/proxy/openai/v1", api_key=token, max_retries=0)

    def plain() -> str:
        reply = sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        return reply.choices[0].message.content or ""

    def streamed() -> str:
        stream = sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    assert await asyncio.to_thread(plain) == "hello from upstream"
    assert await asyncio.to_thread(streamed) == "streamed"
    assert len(seen) == 2
    for headers in seen:
        assert headers["Authorization"] == f"Bearer {OPENAI_KEY}"
        assert token not in json.dumps(headers)


async def test_anthropic_sdk_plain_and_streamed(sdk_setup: tuple[str, str, Seen]) -> None:
    vaultd_url, token, seen = sdk_setup
    sdk = anthropic.Anthropic(
        base_url=f"{vaultd_url}/proxy/anthropic", api_key=token, max_retries=0
    )

    def plain() -> str:
        reply = sdk.messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        block = reply.content[0]
        assert block.type == "text"
        return block.text

    def streamed() -> str:
        with sdk.messages.stream(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return "".join(stream.text_stream)

    assert await asyncio.to_thread(plain) == "hello from upstream"
    assert await asyncio.to_thread(streamed) == "streamed"
    assert len(seen) == 2
    for headers in seen:
        assert headers["x-api-key"] == ANTHROPIC_KEY
        assert token not in json.dumps(headers)
        assert "anthropic-version" in headers
