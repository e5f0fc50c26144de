"""Every metering fixture through a real proxy: the audit row holds what the provider reported.

tests/proxy/metering/ checks the meter alone; here each fixture (written in
the providers' own answer shapes, see its manifest) is sent by a fake
upstream on 127.0.0.1, in small pieces, through vaultd to a real client, and
the audit row must then hold the exact model and token counts, and the cost
genai-prices gives for them. A cut-off fixture is sent and then the
connection is dropped: counted as far as seen, audited as a broken stream.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import genai_prices
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.proxy.metering.support import Fixture, manifest
from tests.support.http import bearer, mint_token
from tests.support.upstream import vaultd_for
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE

Client = TestClient[web.Request, web.Application]
PROVIDER_OF = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
PIECE = 97  # bytes per write: events and JSON bodies straddle writes


def fixture_app() -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        fixture = next(f for f in manifest() if f.file == request.query["fx"])
        response = web.StreamResponse(
            status=fixture.status, headers={"Content-Type": fixture.content_type}
        )
        await response.prepare(request)
        body = fixture.body
        for start in range(0, len(body), PIECE):
            await response.write(body[start : start + PIECE])
            await asyncio.sleep(0)
        if not fixture.complete:
            # Cut off: no end of the chunked body, the connection just goes.
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


def path_for(fixture: Fixture) -> str:
    if fixture.kind == "gemini":
        # Gemini names the model in the path; answers may not (an error).
        model = fixture.model_hint or "gemini-2.5-flash"
        return f"/proxy/gemini/v1beta/models/{model}:streamGenerateContent?fx={fixture.file}"
    return f"/proxy/{fixture.kind}/v1/fixture?fx={fixture.file}"


def expected_cost(fixture: Fixture) -> float | None:
    reading = fixture.expect
    assert reading is not None
    if reading.input_tokens == reading.output_tokens == 0:
        return 0.0
    usage = genai_prices.Usage(
        input_tokens=reading.input_tokens,
        output_tokens=reading.output_tokens,
        cache_read_tokens=reading.cached_input_tokens,
        cache_write_tokens=reading.cache_write_tokens,
    )
    try:
        price = genai_prices.calc_price(
            usage, model_ref=reading.model or "", provider_id=PROVIDER_OF[fixture.kind]
        )
    except LookupError:
        return None  # a model the price data does not know: counted, not priced
    return float(price.total_price)


@pytest.mark.parametrize("fixture", manifest(), ids=lambda f: f.file)
async def test_the_audit_row_holds_what_the_provider_reported(
    fixture: Fixture,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    upstream = await aiohttp_server(fixture_app(), host="127.0.0.1")
    url = f"http://127.0.0.1:{upstream.port}"
    client, config, _ = await vaultd_for(
        url, tmp_path, aiohttp_client, f'\n[services.gemini]\nbase_url = "{url}"\n'
    )
    vault = client.app[VAULT]
    vault.credentials.add(vault.unlock(), service="gemini", name="g", secret="AIzaFIXTUREkey00009")
    token = mint_token(vault, config, scopes=["proxy"])
    response = await client.get(path_for(fixture), headers=bearer(token))
    assert response.status == fixture.status
    if fixture.complete:
        assert await response.read() == fixture.body  # observed, never changed
    else:
        with pytest.raises(Exception):  # noqa: B017, PT011 - the client sees a truncated body
            await response.read()
    await client.app[USAGE].flush()
    conn = sqlite3.connect(config.db_path)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM audit").fetchone()
    conn.close()
    assert row["status"] == (fixture.status if fixture.complete else 502)
    reading = fixture.expect
    got = (row["model"], row["input_tokens"], row["output_tokens"], row["cached_input_tokens"])
    if reading is None:
        assert got == (None, None, None, None)
        assert row["cost_usd"] is None
        return
    # The meter's hint is the model a Gemini path names; other requests' models
    # are in their bodies, which the proxy does not read for this.
    model = reading.model if fixture.kind == "gemini" or fixture.model_hint is None else None
    assert got == (
        model,
        reading.input_tokens,
        reading.output_tokens,
        reading.cached_input_tokens,
    )
    cost = expected_cost(fixture)
    if cost is None:
        assert row["cost_usd"] is None
    else:
        # To the cent, and in fact to a millionth of one.
        assert row["cost_usd"] == pytest.approx(cost, rel=1e-9, abs=1e-12)
