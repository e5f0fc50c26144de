"""What the proxy records and what it passes on of a session token.

Only requests with a valid session are audited, and never with the service
name as the client typed it; the access log cuts percent-encoded tokens; more
forms of the key are redacted; a token in the path or an encoded query never
goes upstream; the token is checked before the service is looked up; and
``Expect`` stays between the client and vaultd. (No upstream text in a
problem, and no header named after the key, need the ``hostile`` upstream:
tests/proxy/test_hostile_peers.py.)
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.http import bearer, mint_token, problem
from tests.support.upstream import Proxy, StartUpstream, vaultd_for
from vaultd.http.appkeys import VAULT
from vaultd.proxy import usage as usage_module
from vaultd.proxy.decisions import secret_forms, without_tokens
from vaultd.proxy.redact import Patterns
from vaultd.proxy.routes import USAGE
from vaultd.services import Service


async def audit_rows(proxy: Proxy) -> list[dict[str, object]]:
    await proxy.client.app[USAGE].flush()
    conn = sqlite3.connect(proxy.config.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()


# -- what is audited ---------------------------------------------------------


async def test_requests_without_a_valid_session_are_not_audited(proxy: Proxy) -> None:
    bad = "fn_sess_" + "A" * 43
    for path, headers, status in (
        ("/proxy/openai/x", {}, 401),
        ("/proxy/openai/x", bearer(bad), 401),
        ("/proxy/nosuch/x", {}, 401),
        (f"/proxy/{proxy.token}/x", {}, 401),
        ("/proxy/openai/x", {"Authorization": "Bearer nope"}, 401),
    ):
        assert (await proxy.client.get(path, headers=headers)).status == status
    assert await audit_rows(proxy) == []
    # A valid session is audited, refused or not.
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    no_proxy = proxy.mint(name="reader", scopes=["read"])
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth(no_proxy))
    assert resp.status == 403
    assert [row["status"] for row in await audit_rows(proxy)] == [200, 403]


async def test_an_unknown_service_is_not_stored_as_typed(proxy: Proxy) -> None:
    resp = await proxy.client.get(f"/proxy/{proxy.token}/x", headers=proxy.auth())
    await problem(resp, 404, "not-found")
    resp = await proxy.client.get("/proxy/no%5Fsuch/x", headers=proxy.auth())
    await problem(resp, 404, "not-found")
    rows = await audit_rows(proxy)
    assert [row["service"] for row in rows] == ["?", "?"]
    assert proxy.token[12:] not in json.dumps(rows)


# -- the access log ----------------------------------------------------------------


async def test_access_log_cuts_percent_encoded_tokens(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vaultd.access")
    tail = proxy.token[len("fn_sess_") :]
    targets = (
        "/proxy/echo/fn%5Fsess%5F" + tail,
        "/proxy/openai/fn_%73ess_" + tail,
        "/api/x/fn%5fsess%5f" + tail,
    )
    for target in targets:
        resp = await proxy.client.get(target, headers=proxy.auth())
        assert resp.status >= 400
    lines = [r.getMessage() for r in caplog.records if r.name == "vaultd.access"]
    assert len(lines) == len(targets)
    for line in lines:
        assert tail[:20] not in unquote(line), line
        assert "[REDACTED]" in line


# -- forms of the key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "echo"),
    [
        ("sk-we/ird+key=0010", b"key=sk-we%2fird%2bkey%3d0010"),  # lower-case escapes
        ("sk-we/ird+key=0010", b"/u/sk-we/ird%2bkey%3d0010"),  # quote() as a path, lower-cased
        ("sk-amp&lt<gt>-0011", b'{"k":"sk-amp\\u0026lt\\u003cgt\\u003e-0011"}'),  # Go's JSON
    ],
)
def test_more_forms_of_the_key_are_redacted(secret: str, echo: bytes) -> None:
    service = Service(name="s", base_url="http://127.0.0.1:9")
    patterns = Patterns(secret_forms(service, secret))
    assert patterns.found_in(echo)
    assert b"0010" not in patterns.sub(echo) and b"0011" not in patterns.sub(echo)


# -- tokens where they do not belong -------------------------------------------------


def test_an_encoded_token_in_the_query_is_dropped() -> None:
    # (Through the server, yarl already decodes escaped letters in the query:
    # the end-to-end test below holds either way, this one pins the function.)
    token = "fn_sess_" + "B" * 43
    for encoded in (token.replace("s", "%73", 1), "fn_s%65ss_" + "B" * 43):
        assert without_tokens(f"a=1&key={encoded}&b=2") == "a=1&b=2"


async def test_an_encoded_token_in_the_query_is_not_forwarded(proxy: Proxy) -> None:
    encoded = "fn_%73ess_" + proxy.token[len("fn_sess_") :]
    resp = await proxy.client.get(f"/proxy/openai/x?a=1&key={encoded}", headers=proxy.auth())
    assert resp.status == 200
    assert proxy.upstream.seen[-1].path_qs == "/x?a=1"


@pytest.mark.parametrize(
    "form",
    [
        lambda t: t,
        lambda t: t.replace("_", "%5F"),
        lambda t: t.replace("_", "%5f"),
        lambda t: "fn_%73ess_" + t[len("fn_sess_") :],
        lambda t: "v1/" + t + "/more",
    ],
    ids=["plain", "escaped", "lower-escaped", "escaped-letter", "mid-path"],
)
async def test_a_token_in_the_path_is_refused(proxy: Proxy, form: Callable[[str], str]) -> None:
    resp = await proxy.client.get(f"/proxy/openai/{form(proxy.token)}", headers=proxy.auth())
    body = await problem(resp, 400, "bad-proxy-path")
    assert proxy.token not in json.dumps(body)
    assert proxy.upstream.seen == []


# -- token, then service, then permission ---------------------------------------------


async def test_the_token_is_checked_before_the_service(proxy: Proxy) -> None:
    for path in ("/proxy/nosuch/x", "/proxy/openai/x"):
        await problem(await proxy.client.get(path), 401, "unauthorized")
    resp = await proxy.client.get("/proxy/nosuch/x", headers=proxy.auth())
    await problem(resp, 404, "not-found")
    only_github = proxy.mint(name="gh", services=["github"])
    resp = await proxy.client.get("/proxy/nosuch/x", headers=proxy.auth(only_github))
    await problem(resp, 404, "not-found")
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth(only_github))
    await problem(resp, 403, "forbidden")
    assert proxy.upstream.seen == []


# -- Expect ------------------------------------------------------------------------------


async def test_expect_is_not_forwarded(proxy: Proxy) -> None:
    resp = await proxy.client.post(
        "/proxy/openai/x", data=b"hello", headers=proxy.auth(), expect100=True
    )
    assert resp.status == 200
    sent = {name.lower() for name in proxy.upstream.seen[-1].headers}
    assert "expect" not in sent
    assert proxy.upstream.seen[-1].body == b"hello"


# -- one session cannot push another's rows out ------------------------------------------


async def test_a_flood_of_refusals_cannot_push_out_another_sessions_record(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack: a proxy token makes many cheap refused requests (each audited) until
    the newest [audit] max_rows are all its own. Here max_rows is 40, the flood 300."""
    monkeypatch.setattr(usage_module, "PRUNE_EVERY", 0)  # prune at every flush
    upstream = await start_upstream()
    client, config, _ = await vaultd_for(
        upstream.url, tmp_path, aiohttp_client, "[audit]\nmax_rows = 40\n"
    )
    vault = client.app[VAULT]
    victim = mint_token(vault, config, scopes=["proxy"], name="victim")
    flooder = mint_token(vault, config, scopes=["proxy"], name="flooder")
    marker = await client.get("/proxy/openai/v1/marker", headers=bearer(victim))
    assert marker.status == 200
    for _ in range(300):
        refused = await client.get("/proxy/nosuch/x", headers=bearer(flooder))
        assert refused.status == 404
    await client.app[USAGE].flush()
    with sqlite3.connect(config.db_path) as conn:
        rows = conn.execute(
            "SELECT s.name, a.path FROM audit a JOIN sessions s ON s.id = a.session_id"
        ).fetchall()
    assert ("victim", "/v1/marker") in rows
    assert sum(1 for name, _ in rows if name == "flooder") == 40 // 4
