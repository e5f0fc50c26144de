"""A request body reaches the upstream as the client sent it, compressed ones too."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestServer

from tests.support.http import bearer
from tests.support.providers import CHAT, Client, provider_rig


async def test_a_gzip_request_body_is_forwarded_compressed_with_its_header(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    rig = await provider_rig(tmp_path, aiohttp_client, aiohttp_server)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    response = await rig.client.post(
        CHAT,
        data=gzip.compress(body.encode()),
        headers={
            **bearer(rig.mint()),
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status == 200, await response.text()
    (call,) = rig.calls
    # The upstream (aiohttp, which decodes request bodies) read the JSON the
    # client compressed: vaultd sent the gzip bytes under their own header.
    assert call.headers["Content-Encoding"] == "gzip"
    assert call.json() == json.loads(body)
