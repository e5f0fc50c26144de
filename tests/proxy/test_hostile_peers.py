"""The proxy against hostile or careless upstreams and clients, through real sockets.

Each test here pins a finding of the proxy's security review: a way the key,
a session token or an upstream's cookies could cross vaultd, or a client input
that could crash it or grow its memory. The fake upstreams are aiohttp servers
on 127.0.0.1; ``hostile`` serves the misbehaviours the shared fake upstream in
``tests/support/upstream.py`` does not have.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from tests.support.http import bearer, mint_token, problem, raw_http
from tests.support.upstream import (
    OPENAI_KEY,
    Proxy,
    Seen,
    StartUpstream,
    Upstream,
    proxy_in_front_of,
    raw_upstream,
    vaultd_for,
)
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import CACHE, USAGE

BASIC_SECRET = "alice:s3cret-PASSWORD-0006"
BASIC_B64 = base64.b64encode(BASIC_SECRET.encode()).decode("ascii")
QUERY_KEY = "QUERYKEYquerykey0007"
# Keys with characters that JSON, a URL or base64 write differently: the
# verbatim key is then not what an echo carries.
JSON_KEY = 'sk-we/ird"quote\\back-0008'
URL_KEY = "QUERY/key+with space&amp=0009"


def hostile_app(seen: list[Seen], other_url: str) -> web.Application:
    """An upstream that echoes what it got in every way the review found to leak."""

    async def record(request: web.Request) -> Seen:
        item = Seen(request.method, request.path_qs, dict(request.headers), await request.read())
        seen.append(item)
        return item

    def key_of(item: Seen) -> str:
        return item.headers.get("Authorization", "").removeprefix("Bearer ")

    async def compress_echo(request: web.Request) -> web.Response:
        """Compresses only if the request allowed it, as well-behaved servers do."""
        item = await record(request)
        response = web.json_response({"headers": item.headers})
        response.enable_compression()
        return response

    async def forced_encoding(request: web.Request) -> web.Response:
        """Names a Content-Encoding whatever was asked for, the key inside."""
        item = await record(request)
        body = f'{{"error": "bad key {key_of(item)}"}}'.encode()
        codings = request.query.getall("ce")
        if any("gzip" in c for c in codings):
            body = gzip.compress(body, mtime=0)
        headers = CIMultiDict([("Content-Encoding", c) for c in codings])
        return web.Response(body=body, headers=headers, content_type="application/json")

    async def gzip_transfer(request: web.Request) -> web.Response:
        """A gzip transfer coding, which aiohttp's web server would not write: raw bytes."""
        item = await record(request)
        body = gzip.compress(f'{{"error": "bad key {key_of(item)}"}}'.encode(), mtime=0)
        assert request.transport is not None
        request.transport.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        request.transport.close()
        return web.Response()  # never sent: the connection is closed

    async def echo_headers(request: web.Request) -> web.Response:
        """Quotes what it received in response headers, as some debug endpoints do."""
        item = await record(request)
        headers = {
            "X-Echo-Authorization": item.headers.get("Authorization", ""),
            "X-Echo-Custom": item.headers.get("X-Custom-Key", ""),
            "X-Echo-Query": request.rel_url.raw_query_string,
            "Link": f'<{other_url}/page?{request.rel_url.raw_query_string}>; rel="next"',
        }
        return web.Response(text="ok", headers=headers)

    async def echo_reason(request: web.Request) -> web.Response:
        item = await record(request)
        return web.Response(status=401, reason=f"Invalid key {key_of(item)}", text="no")

    async def echo_reason_alone(request: web.Request) -> web.Response:
        """The key, and nothing else, as the reason phrase."""
        item = await record(request)
        return web.Response(status=401, reason=key_of(item), text="no")

    async def echo_escaped(request: web.Request) -> web.StreamResponse:
        """Echoes the key as .NET writes it, every character escaped, and as HTML, in
        seven-byte chunks so that each form straddles chunk boundaries."""
        item = await record(request)
        key = key_of(item)
        dotnet = "".join(f"\\u{ord(c):04X}" if c in "+&" else c for c in key)
        every = "".join(f"\\u{ord(c):04X}" for c in key)
        html = key.replace("&", "&amp;").replace("+", "&#x2B;")
        payload = json.dumps({"a": 0}).encode()[:-1] + (
            f', "dotnet": "{dotnet}", "every": "{every}", "html": "{html}"}}'.encode()
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(payload), 7):
            await response.write(payload[i : i + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def echo_range(request: web.Request) -> web.Response:
        """Echoes the key in its body and serves any byte range of that body asked for."""
        item = await record(request)
        body = f'{{"error": "invalid key {key_of(item)}"}}'.encode()
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            part = body[int(first) : int(last) + 1]
            return web.Response(status=206, body=part, content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    async def redirect_with_query(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(f"{other_url}/next?{request.rel_url.raw_query_string}#frag")

    async def cookies(request: web.Request) -> web.Response:
        item = await record(request)
        response = web.json_response({"cookie": item.headers.get("Cookie")})
        response.set_cookie("upstream_session", "abc123")
        return response

    async def named_hop(request: web.Request) -> web.Response:
        await record(request)
        headers = {"Connection": "X-Hop-Secret", "X-Hop-Secret": "1", "X-Kept": "yes"}
        return web.Response(text="ok", headers=headers)

    async def php_echo(request: web.Request) -> web.Response:
        """JSON written as PHP's json_encode does it: every / escaped as \\/."""
        item = await record(request)
        text = json.dumps({"key": key_of(item)}).replace("/", "\\/")
        return web.Response(text=text, content_type="application/json")

    async def encoding_echo(request: web.Request) -> web.Response:
        """Names the key it received as its Content-Encoding."""
        item = await record(request)
        return web.Response(text="x", headers={"Content-Encoding": key_of(item)})

    async def key_named_header(request: web.Request) -> web.Response:
        """Sends headers named after the key: as received, and re-cased as Go would."""
        item = await record(request)
        key = key_of(item)
        headers = {key: "1", key.title(): "2", f"X-{key}-Echo": "3", "X-Kept": "yes"}
        return web.Response(text="ok", headers=headers)

    app = web.Application()
    app.router.add_get("/encoding-echo", encoding_echo)
    app.router.add_get("/key-named-header", key_named_header)
    app.router.add_get("/compress-echo", compress_echo)
    app.router.add_route("*", "/forced-encoding", forced_encoding)
    app.router.add_get("/gzip-transfer", gzip_transfer)
    app.router.add_get("/echo-headers", echo_headers)
    app.router.add_get("/hdr/echo-headers", echo_headers)  # the hdr service's base path
    app.router.add_get("/redirect-with-query", redirect_with_query)
    app.router.add_get("/echo-reason", echo_reason)
    app.router.add_get("/echo-reason-alone", echo_reason_alone)
    app.router.add_get("/echo-range", echo_range)
    app.router.add_get("/echo-escaped", echo_escaped)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/named-hop", named_hop)
    app.router.add_get("/php-echo", php_echo)
    return app


@pytest.fixture
async def hostile(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> Proxy:
    """vaultd in front of ``hostile_app``: every configured service points at it."""
    bystander = await start_upstream()
    seen: list[Seen] = []
    server = await aiohttp_server(
        hostile_app(seen, bystander.url), host="127.0.0.1", access_log=None
    )
    return await proxy_in_front_of(Upstream(server, seen), bystander, tmp_path, aiohttp_client)


def add_credential(proxy: Proxy, service: str, name: str, secret: str) -> None:
    vault = proxy.client.app[VAULT]
    vault.credentials.add(vault.unlock(), service=service, name=name, secret=secret)


def forms_of(secret: str) -> list[str]:
    """The key as an echo may carry it: verbatim, percent-encoded, JSON-escaped."""
    escaped = json.dumps(secret)[1:-1]
    return [secret, quote(secret, safe=""), escaped, escaped.replace("/", "\\/")]


# -- 1. compression must not switch the redaction off ------------------------------


async def test_client_accept_encoding_is_replaced_by_identity(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/openai/v1/models", headers={**proxy.auth(), "Accept-Encoding": "gzip, br"}
    )
    assert resp.status == 200
    assert proxy.upstream.seen[-1].headers["Accept-Encoding"] == "identity"


async def test_compressing_upstream_cannot_smuggle_the_key(hostile: Proxy) -> None:
    resp = await hostile.client.get(
        "/proxy/openai/compress-echo", headers={**hostile.auth(), "Accept-Encoding": "gzip"}
    )
    assert resp.status == 200
    text = await resp.text()  # decompressed by the test client if it were compressed
    assert OPENAI_KEY not in text
    assert json.loads(text)["headers"]["Authorization"] == "Bearer [REDACTED]"


@pytest.mark.parametrize(
    "codings", [["gzip"], ["br"], ["x-custom"], ["identity, gzip"], ["identity", "gzip"]]
)
async def test_encoded_answer_despite_identity_is_refused(
    hostile: Proxy, codings: list[str]
) -> None:
    query = "&".join(f"ce={quote(c)}" for c in codings)
    resp = await hostile.client.get(
        f"/proxy/openai/forced-encoding?{query}", headers=hostile.auth(), auto_decompress=False
    )
    body = await problem(resp, 502, "upstream-encoding")
    assert "Content-Encoding" in body["detail"] and "identity" in body["detail"]
    raw = await resp.read()
    assert OPENAI_KEY.encode() not in raw
    assert "Content-Encoding" not in resp.headers


async def test_gzip_transfer_coding_is_refused(hostile: Proxy) -> None:
    resp = await hostile.client.get("/proxy/openai/gzip-transfer", headers=hostile.auth())
    await problem(resp, 502, "upstream-encoding")
    assert OPENAI_KEY.encode() not in await resp.read()


@pytest.mark.parametrize("codings", [[""], ["identity"], ["", "identity"], ["Identity"]])
async def test_empty_or_identity_encoding_is_still_redacted(
    hostile: Proxy, codings: list[str]
) -> None:
    query = "&".join(f"ce={quote(c)}" for c in codings)
    resp = await hostile.client.get(
        f"/proxy/openai/forced-encoding?{query}", headers=hostile.auth()
    )
    assert resp.status == 200
    assert await resp.read() == b'{"error": "bad key [REDACTED]"}'


async def test_head_with_an_encoding_has_no_body_to_check(hostile: Proxy) -> None:
    resp = await hostile.client.head(
        "/proxy/openai/forced-encoding?ce=gzip", headers=hostile.auth()
    )
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"


# -- 2. response headers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "secret"),
    [
        ("openai", OPENAI_KEY),
        ("hdr", "HDRKEYhdrkey0005"),
        ("basicsvc", BASIC_SECRET),
        ("querysvc", QUERY_KEY),
    ],
)
async def test_response_headers_never_carry_the_key(
    hostile: Proxy, service: str, secret: str
) -> None:
    resp = await hostile.client.get(f"/proxy/{service}/echo-headers?a=1", headers=hostile.auth())
    assert resp.status == 200
    dump = json.dumps(list(resp.headers.items()))
    for form in (*forms_of(secret), BASIC_B64):
        assert form not in dump
    assert "[REDACTED]" in dump


async def test_reason_phrase_never_carries_the_key(hostile: Proxy) -> None:
    resp = await hostile.client.get("/proxy/openai/echo-reason", headers=hostile.auth())
    assert resp.status == 401
    assert resp.reason == "Unauthorized"


# A key longer in bytes than in characters: the check once compared the
# reason's characters with the shortest form's bytes and skipped it.
NON_ASCII_KEY = "sk-proj-ÄÖÜäöüß-REALKEY-1234"


async def test_a_non_ascii_key_alone_as_the_reason_is_dropped(hostile: Proxy) -> None:
    assert len(NON_ASCII_KEY) < len(NON_ASCII_KEY.encode()) == 35
    add_credential(hostile, "openai", "unicode", NON_ASCII_KEY)
    headers = {**hostile.auth(), "X-Vaultd-Credential": "unicode"}
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile.client.port)
    try:
        lines = ["GET /proxy/openai/echo-reason-alone HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert hostile.upstream.seen[-1].headers["Authorization"] == f"Bearer {NON_ASCII_KEY}"
    status_line = raw.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 401 Unauthorized", status_line
    assert NON_ASCII_KEY.encode() not in raw


async def test_location_loses_the_key_parameter(hostile: Proxy) -> None:
    resp = await hostile.client.get(
        "/proxy/querysvc/redirect-with-query?page=2&x=a%26b",
        headers=hostile.auth(),
        allow_redirects=False,
    )
    assert resp.status == 302
    assert resp.headers["Location"] == f"{hostile.bystander.url}/next?page=2&x=a%26b#frag"
    assert hostile.bystander.seen == []


async def test_location_loses_a_percent_encoded_key(hostile: Proxy) -> None:
    add_credential(hostile, "querysvc", "url", URL_KEY)
    resp = await hostile.client.get(
        "/proxy/querysvc/redirect-with-query?page=2",
        headers={**hostile.auth(), "X-Vaultd-Credential": "url"},
        allow_redirects=False,
    )
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location == f"{hostile.bystander.url}/next?page=2#frag"
    # What the upstream got is the key, so the check above is not vacuous.
    assert "key=QUERY%2Fkey%2Bwith%20space%26amp%3D0009" in hostile.upstream.seen[-1].path_qs


# -- 3. every form of the key in bodies ---------------------------------------------


async def test_basic_auth_echo_is_redacted_in_base64_too(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/basicsvc/x", headers=proxy.auth())
    assert resp.status == 200
    text = await resp.text()
    assert BASIC_B64.rstrip("=") not in text
    assert json.loads(text)["headers"]["Authorization"].startswith("Basic [REDACTED]")


async def test_query_key_echo_is_redacted_percent_encoded(proxy: Proxy) -> None:
    add_credential(proxy, "querysvc", "url", URL_KEY)
    resp = await proxy.client.get(
        "/proxy/querysvc/search?q=1", headers={**proxy.auth(), "X-Vaultd-Credential": "url"}
    )
    assert resp.status == 200
    text = await resp.text()
    sent = proxy.upstream.seen[-1].path_qs
    assert sent == "/search?q=1&key=QUERY%2Fkey%2Bwith%20space%26amp%3D0009"
    assert json.loads(text)["path_qs"] == "/search?q=1&key=[REDACTED]"
    for form in forms_of(URL_KEY):
        assert form not in text


async def test_json_escaped_key_is_redacted(proxy: Proxy) -> None:
    add_credential(proxy, "openai", "weird", JSON_KEY)
    resp = await proxy.client.get(
        "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": "weird"}
    )
    assert resp.status == 200
    text = await resp.text()
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {JSON_KEY}"
    assert json.loads(text)["headers"]["Authorization"] == "Bearer [REDACTED]"
    for form in forms_of(JSON_KEY):
        assert form not in text


async def test_slash_escaped_json_key_is_redacted(hostile: Proxy) -> None:
    add_credential(hostile, "openai", "weird", JSON_KEY)
    resp = await hostile.client.get(
        "/proxy/openai/php-echo", headers={**hostile.auth(), "X-Vaultd-Credential": "weird"}
    )
    assert resp.status == 200
    assert await resp.read() == b'{"key": "[REDACTED]"}'


# -- 4. and the extra path checks: 400, never 500 -------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/openai/v1/%ff",
        "/proxy/openai/%c3%28/x",
        "/proxy/openai/v1/models;jsessionid=1",
        "/proxy/openai/v1/models%3Bx=1",
        "/proxy/openai/%252e%252e/x",
        "/proxy/openai/a%252Fb",
        "/proxy/openai/a%2541",
    ],
)
async def test_undecodable_or_ambiguous_paths_are_400(proxy: Proxy, path: str) -> None:
    port = proxy.client.server.port
    assert port is not None
    status, _headers, body = await raw_http(
        "127.0.0.1",
        port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {proxy.token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 400, body
    assert json.loads(body)["type"].endswith("/bad-proxy-path")
    assert proxy.upstream.seen == []


async def test_a_literal_percent_sign_still_passes(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/files/100%25done", headers=proxy.auth())
    assert resp.status == 200
    assert proxy.upstream.seen[-1].path_qs == "/files/100%25done"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "TRACK"])
async def test_trace_connect_track_never_reach_the_upstream(proxy: Proxy, method: str) -> None:
    port = proxy.client.server.port
    assert port is not None
    status, headers, body = await raw_http(
        "127.0.0.1",
        port,
        f"{method} /proxy/openai/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {proxy.token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert 400 <= status < 500, body
    assert proxy.upstream.seen == []
    if method == "TRACE":  # the others the HTTP parser refuses before vaultd sees them
        assert status == 405
        assert "TRACE" not in headers["allow"]
        assert json.loads(body)["type"].endswith("/method-not-allowed")


# -- 5. credential selector ----------------------------------------------------------


async def test_credential_selector_length_is_capped(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": "n" * 301}
    )
    await problem(resp, 400, "malformed-request")
    resp = await proxy.client.get(
        "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": "n" * 300}
    )
    await problem(resp, 404, "no-credential")
    assert proxy.upstream.seen == []


async def test_credential_misses_do_not_grow_the_cache(proxy: Proxy) -> None:
    cache = proxy.client.app[CACHE]
    for i in range(200):
        resp = await proxy.client.get(
            "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": f"nosuch-{i}"}
        )
        assert resp.status == 404
    # The session is all there is to keep. (A usage flush may have emptied the
    # cache meanwhile, so this is a bound, not an equality.)
    assert len(cache) <= 1
    # A hit is still cached: the same object, with no database read in between.
    resp = await proxy.client.get(
        "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": "second"}
    )
    assert resp.status == 200
    assert len(cache) == 3  # session, credential, secret
    assert cache.credential("openai", "second") is cache.credential("openai", "second")


# -- 6. the audit path ----------------------------------------------------------------


async def test_a_token_in_the_path_never_reaches_the_audit_log(proxy: Proxy) -> None:
    # Refused (400, see test_proxy_hardening), but audited: the session is valid.
    encoded = proxy.token.replace("_", "%5F")
    for path in (f"/proxy/openai/v1/{proxy.token}", f"/proxy/openai/v1/{encoded}"):
        assert (await proxy.client.get(path, headers=proxy.auth())).status == 400
    assert proxy.upstream.seen == []
    await proxy.client.app[USAGE].flush()
    conn = sqlite3.connect(proxy.config.db_path)
    try:
        paths = [row[0] for row in conn.execute("SELECT path FROM audit ORDER BY id")]
    finally:
        conn.close()
    assert len(paths) == 2
    for path in paths:
        assert proxy.token not in path and proxy.token[12:] not in path
        assert path.startswith("/v1/fn_sess_") and path.endswith("[REDACTED]")


async def test_a_token_in_the_query_is_not_forwarded(proxy: Proxy) -> None:
    encoded = proxy.token.replace("_", "%5F")
    resp = await proxy.client.get(
        f"/proxy/openai/x?a=1&api_key={proxy.token}&b=2&k2={encoded}&c=fn_sess",
        headers=proxy.auth(),
    )
    assert resp.status == 200
    assert proxy.upstream.seen[-1].path_qs == "/x?a=1&b=2&c=fn_sess"


# -- 7. cookies and hop-by-hop --------------------------------------------------------


async def test_cookies_never_cross_the_proxy(hostile: Proxy) -> None:
    resp = await hostile.client.get(
        "/proxy/openai/cookies", headers={**hostile.auth(), "Cookie": "local=secret-cookie"}
    )
    assert resp.status == 200
    assert await resp.json() == {"cookie": None}
    assert "Cookie" not in hostile.upstream.seen[-1].headers
    assert "Set-Cookie" not in resp.headers
    assert not hostile.client.session.cookie_jar.filter_cookies(hostile.client.make_url("/"))


async def test_headers_named_by_the_upstreams_connection_are_dropped(hostile: Proxy) -> None:
    resp = await hostile.client.get("/proxy/openai/named-hop", headers=hostile.auth())
    assert resp.status == 200
    assert "X-Hop-Secret" not in resp.headers
    assert resp.headers["X-Kept"] == "yes"


# -- 8. second review: no upstream text in problems, no header named after the key ----


async def test_encoding_problem_never_repeats_the_upstreams_value(hostile: Proxy) -> None:
    resp = await hostile.client.get("/proxy/openai/encoding-echo", headers=hostile.auth())
    body = await problem(resp, 502, "upstream-encoding")
    assert "Content-Encoding" in body["detail"]
    raw = (await resp.read()).lower()
    assert OPENAI_KEY.lower().encode() not in raw
    assert OPENAI_KEY.lower()[:12].encode() not in raw


async def test_headers_named_after_the_key_are_dropped(hostile: Proxy) -> None:
    resp = await hostile.client.get("/proxy/openai/key-named-header", headers=hostile.auth())
    assert resp.status == 200
    assert resp.headers["X-Kept"] == "yes"
    names = " ".join(resp.headers).lower()
    assert OPENAI_KEY.lower() not in names
    assert "-echo" not in names


# -- an answer HTTP does not allow ----------------------------------------------------


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_a_502(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    status: bytes,
) -> None:
    """A raw upstream answers with a status no HTTP client expects: vaultd does not pass it."""
    reply = b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(reply) as (url, _):
        client, config, _ = await vaultd_for(url, tmp_path, aiohttp_client)
        token = mint_token(client.app[VAULT], config, scopes=["proxy"])
        resp = await client.get("/proxy/openai/v1/models", headers=bearer(token))
        body = await problem(resp, 502, "upstream-invalid-answer")
        assert f"status {int(status)}," in body["detail"]


@pytest.mark.parametrize(
    ("reply", "tokens"),
    [
        (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx",
            0,
        ),
        (b"HTTP/1.1 600 Odd\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 0),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx",
            None,
        ),
    ],
    ids=["gzip-401", "status-600", "gzip-200"],
)
async def test_an_answer_refused_unread_is_metered_by_its_status(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    reply: bytes,
    tokens: int | None,
) -> None:
    """An error answer bills nothing, its body read or not: a zero reading (not one of
    /api/usage's unmetered requests). A 2xx answer refused unread is unmetered."""
    async with raw_upstream(reply) as (url, _):
        client, config, _ = await vaultd_for(url, tmp_path, aiohttp_client)
        token = mint_token(client.app[VAULT], config, scopes=["proxy"])
        resp = await client.post(
            "/proxy/openai/v1/chat/completions",
            json={"model": "gpt-4o", "messages": []},
            headers=bearer(token),
        )
        assert resp.status == 502
        await resp.read()
        await client.app[USAGE].flush()
    conn = sqlite3.connect(config.db_path)
    try:
        (row,) = conn.execute("SELECT input_tokens, output_tokens, cost_usd FROM audit").fetchall()
    finally:
        conn.close()
    assert row == (tokens, tokens, None if tokens is None else 0.0)


# -- header bytes pass as sent, or not at all ------------------------------------------


async def test_header_bytes_reach_the_upstream_unchanged_or_are_refused(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    async with raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as (url, heads):
        client, config, _ = await vaultd_for(url, tmp_path, aiohttp_client)
        assert client.server.port is not None
        token = mint_token(client.app[VAULT], config, scopes=["proxy"]).encode()

        def request(value: bytes) -> bytes:
            return (
                b"GET /proxy/openai/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                + token
                + b"\r\nX-Note: "
                + value
                + b"\r\nConnection: close\r\n\r\n"
            )

        vaultd_port = client.server.port
        status, _, _ = await raw_http(
            "127.0.0.1", vaultd_port, request(b"caf\xc3\xa9 \xe2\x82\xac")
        )
        assert status == 200
        assert b"\r\nX-Note: caf\xc3\xa9 \xe2\x82\xac\r\n" in heads[-1]  # UTF-8 as sent
        status, _, body = await raw_http("127.0.0.1", vaultd_port, request(b"caf\xe9 \xff"))
        assert status == 400, body
        assert b"bad-proxy-header" in body and b"X-Note" in body and b"not UTF-8" in body
        assert len(heads) == 1  # nothing went upstream


# -- Range: slices of an echo that redaction never sees whole ----------------------------


async def test_a_range_never_slices_an_echoed_key(hostile: Proxy) -> None:
    """The attack: ask for bytes 22-31, then 32-41: each a slice no pattern matches."""
    key = OPENAI_KEY
    seen_slices = []
    for first in range(0, 80, 10):
        headers = {**hostile.auth(), "Range": f"bytes={first}-{first + 9}", "If-Range": "x"}
        resp = await hostile.client.get("/proxy/openai/echo-range", headers=headers)
        assert resp.status == 200  # the whole answer: the upstream never saw the Range
        seen_slices.append(await resp.read())
        sent = hostile.upstream.seen[-1].headers
        assert "Range" not in sent and "If-Range" not in sent
    for body in seen_slices:
        assert key.encode() not in body and b"[REDACTED]" in body


async def test_a_service_that_opts_in_gets_the_range(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    upstream = await start_upstream()
    ranged = f'[services.files]\nbase_url = "{upstream.url}"\nallow_range = true\n'
    client, config, _ = await vaultd_for(upstream.url, tmp_path, aiohttp_client, ranged)
    vault = client.app[VAULT]
    vault.credentials.add(vault.unlock(), service="files", name="f", secret="FILESkeyFILESkey0009")
    token = mint_token(vault, config, scopes=["proxy"])
    for service, forwarded in (("files", True), ("openai", False)):
        headers = {**bearer(token), "Range": "bytes=0-9"}
        resp = await client.get(f"/proxy/{service}/download", headers=headers)
        assert resp.status == 200
        assert ("Range" in upstream.seen[-1].headers) is forwarded, service


async def test_escaped_echoes_of_a_key_with_plus_and_ampersand_are_redacted(
    hostile: Proxy,
) -> None:
    """Through a real daemon: .NET's \\u002B, every character escaped, HTML references."""
    key = "sk-proj-Plus+And&Key-0001abcdef"
    add_credential(hostile, "openai", "odd", key)
    headers = {**hostile.auth(), "X-Vaultd-Credential": "odd"}
    resp = await hostile.client.get("/proxy/openai/echo-escaped", headers=headers)
    assert resp.status == 200
    body = json.loads(await resp.read())
    assert body == {"a": 0, "dotnet": "[REDACTED]", "every": "[REDACTED]", "html": "[REDACTED]"}
