"""Hostile bytes on a raw socket: malformed framing, smuggling shapes, slow and oversize heads.

Each request is written exactly as given (no client library fixes it up) to
the app served by the daemon's own runner (``DaemonTestServer``), with a
recording upstream behind the proxy. A refused request gets a 4xx problem
with a request id, reaches neither the upstream nor the bystander, and where
the framing is in doubt the daemon closes the connection, so no byte after
it can be read as a second request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.http import (
    PROBLEM_FIELDS,
    bearer,
    fast_server_only,
    split_reply,
)
from tests.support.upstream import OPENAI_KEY, Proxy, StartUpstream, vaultd_for
from vaultd.http.appkeys import VAULT
from vaultd.http.guard import MAX_HEAD
from vaultd.http.problems import PROBLEM_CONTENT_TYPE

TARGET = "/proxy/openai/v1/x"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the daemon closed the connection after it


def parse_reply(raw: bytes, closed: bool) -> Reply:
    return Reply(*split_reply(raw), closed)


async def read_reply(reader: asyncio.StreamReader, *, eof_wait: float = 1) -> Reply:
    """One response (sized by Content-Length), and whether EOF follows within ``eof_wait``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    reply = parse_reply(head, closed=False)
    length = int(reply.headers.get("content-length", "0"))
    reply.body = await asyncio.wait_for(reader.readexactly(length), 5)
    if eof_wait:
        try:
            reply.closed = await asyncio.wait_for(reader.read(1), eof_wait) == b""
        except TimeoutError:
            reply.closed = False
    return reply


async def exchange(port: int, data: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_reply(reader)
    finally:
        writer.close()


def daemon_port(proxy: Proxy) -> int:
    port = proxy.client.server.port
    assert port is not None
    return port


def assert_problem(reply: Reply, status: int, token: str) -> dict[str, object]:
    assert reply.status == status, reply
    assert reply.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE), reply
    problem: dict[str, object] = json.loads(reply.body)
    assert set(problem) >= PROBLEM_FIELDS, problem
    assert problem["status"] == status
    assert problem["request_id"] == reply.headers["x-request-id"]
    assert token not in reply.body.decode("latin-1")
    assert OPENAI_KEY not in reply.body.decode("latin-1")
    return problem


# {H}: a good Host; {A}: a good token; {T}: a proxied path; {B}: the bystander's
# port; {S}: a whole second request, which must never be served if it is
# smuggled in a body.
SMUGGLED = "GET /proxy/openai/smuggled HTTP/1.1\r\n{H}{A}\r\n"
CASES = {
    # CRLF, CR or LF inside the request line: no version left, or a broken one.
    "crlf-in-path": "GET {T}\r\nX-Injected: 1 HTTP/1.1\r\n{H}{A}\r\n",
    "lf-in-path": "GET {T}\nX-Injected: 1 HTTP/1.1\r\n{H}{A}\r\n",
    "cr-in-path": "GET {T}\rX-Injected: 1 HTTP/1.1\r\n{H}{A}\r\n",
    "space-in-path": "GET /proxy/openai/v1/a b HTTP/1.1\r\n{H}{A}\r\n",
    "no-version": "GET {T}\r\n{H}{A}\r\n",
    "http-2.0-line": "GET {T} HTTP/2.0\r\n{H}{A}\r\n",
    "http-1.2": "GET {T} HTTP/1.2\r\n{H}{A}\r\n",
    "h2-preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # CR, LF, NUL and folding inside headers.
    "bare-cr-in-header": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil: a\rb\r\n\r\n",
    "bare-lf-in-header": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil: a\nX-Injected: b\r\n\r\n",
    "cr-in-host": "GET {T} HTTP/1.1\r\nHost: 127.0.0.1\rX: y\r\n{A}\r\n",
    "nul-in-header": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil: a\0b\r\n\r\n",
    "obs-fold": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil: a\r\n b\r\n\r\n",
    "space-before-colon": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil : a\r\n\r\n",
    "empty-header-name": "GET {T} HTTP/1.1\r\n{H}{A}: a\r\n\r\n",
    "crlf-adds-a-host": "GET {T} HTTP/1.1\r\n{H}{A}X-Evil: a\r\nHost: 127.0.0.1:{B}\r\n\r\n",
    # Content-Length and Transfer-Encoding: every shape that smuggles a request.
    "two-content-lengths": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: 5\r\n"
    "Content-Length: 6\r\n\r\nhello!{S}",
    "two-equal-content-lengths": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: 5\r\n"
    "Content-Length: 5\r\n\r\nhello{S}",
    "content-length-list": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: 5, 5\r\n\r\nhello{S}",
    "content-length-plus": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: +5\r\n\r\nhello{S}",
    "content-length-negative": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: -1\r\n\r\n{S}",
    "content-length-huge": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: 1{zeros}\r\n\r\n",
    "cl-then-te": "POST {T} HTTP/1.1\r\n{H}{A}Content-Length: 4\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
    "te-then-cl": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: chunked\r\n"
    "Content-Length: 40\r\n\r\n0\r\n\r\n{S}",
    "te-not-chunked": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: gzip\r\n\r\nabc{S}",
    "te-chunked-not-last": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: chunked, gzip\r\n"
    "\r\n0\r\n\r\n{S}",
    "te-unknown": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{S}",
    "te-twice": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: chunked\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
    "te-in-http-1.0": "POST {T} HTTP/1.0\r\n{H}{A}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
    "te-and-cl-in-http-1.0": "POST {T} HTTP/1.0\r\n{H}{A}Content-Length: 5\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
    "bad-chunk-size": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: chunked\r\n\r\n"
    "zz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": "POST {T} HTTP/1.1\r\n{H}{A}Transfer-Encoding: chunked\r\n\r\n"
    "ffffffffffffffffffff\r\nabc\r\n",
    "bad-chunk-to-the-api": "POST /api/sessions HTTP/1.1\r\n{H}{A}"
    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    # Oversize: one line, one header, too many headers.
    "long-request-line": "GET {T}/{long} HTTP/1.1\r\n{H}{A}\r\n",
    "long-header": "GET {T} HTTP/1.1\r\n{H}{A}X-Big: {long}\r\n\r\n",
    "too-many-headers": "GET {T} HTTP/1.1\r\n{H}{A}{many}\r\n",
    # Request targets that are not a path.
    "absolute-form-proxy": "GET http://127.0.0.1:{B}{T} HTTP/1.1\r\n{H}{A}\r\n",
    "absolute-form-api": "GET http://evil.example/api/credentials HTTP/1.1\r\n{H}{A}\r\n",
    "absolute-form-self": "GET http://{host}/api/credentials HTTP/1.1\r\n{H}{A}\r\n",
    "authority-form": "CONNECT 127.0.0.1:{B} HTTP/1.1\r\n{H}{A}\r\n",
    "asterisk-form": "OPTIONS * HTTP/1.1\r\n{H}{A}\r\n",
    # Methods.
    "lower-case-method": "get {T} HTTP/1.1\r\n{H}{A}\r\n",
    "method-with-parenthesis": "G(T {T} HTTP/1.1\r\n{H}{A}\r\n",
    # No Host: 400 for HTTP/1.1 (RFC 9112 3.2), the Host guard's 403 for 1.0.
    "http-1.1-without-host": "GET {T} HTTP/1.1\r\n{A}\r\n",
    "http-1.0-without-host": "GET {T} HTTP/1.0\r\n{A}\r\n",
    "two-hosts": "GET {T} HTTP/1.1\r\n{H}Host: 127.0.0.1:{B}\r\n{A}\r\n",
}
# What each case gets: 400 from aiohttp's parser (a second Host among them) or
# from the guard's framing check (middleware.framing_fault), 403 from the Host
# guard.
EXPECTED = dict.fromkeys(CASES, 400) | {"http-1.0-without-host": 403}


@fast_server_only
async def test_refused_before_any_upstream(proxy: Proxy) -> None:
    # One daemon for every case (a fixture each would cost more than the
    # cases); a failure names its case.
    port = daemon_port(proxy)
    fields = {
        "H": f"Host: 127.0.0.1:{port}\r\n",
        "A": f"Authorization: Bearer {proxy.token}\r\n",
        "T": TARGET,
        "B": str(proxy.bystander.server.port),
        "host": f"127.0.0.1:{port}",
        "long": "a" * 9000,
        "many": "".join(f"X-H{i}: v\r\n" for i in range(200)),
        "zeros": "0" * 30,
    }
    fields["S"] = SMUGGLED.format(**fields)
    for name, template in CASES.items():
        reply = await exchange(port, template.format(**fields).encode("latin-1"))
        try:
            assert_problem(reply, EXPECTED[name], proxy.token)
            assert reply.closed, "the connection must not be read any further"
            assert proxy.upstream.seen == []
            assert proxy.bystander.seen == []
        except AssertionError as exc:
            raise AssertionError(f"case {name}: {exc}") from None
    await asyncio.sleep(0.2)  # time for a smuggled request to arrive, if one were served
    assert proxy.upstream.seen == []
    assert proxy.bystander.seen == []


async def test_a_valid_request_still_goes_through(proxy: Proxy) -> None:
    """The control for the cases above: the same bytes, well formed, are served."""
    port = daemon_port(proxy)
    reply = await exchange(
        port,
        f"POST {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer "
        f"{proxy.token}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".encode(),
    )
    assert reply.status == 200, reply
    assert [seen.path_qs for seen in proxy.upstream.seen] == ["/v1/x"]
    assert proxy.upstream.seen[0].body == b"hello"


def big_head(port: int, token: str, size: int) -> bytes:
    """A well-formed head of about ``size`` bytes, in headers under aiohttp's own limits."""
    head = (
        f"GET {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n"
    ).encode()
    index = 0
    while len(head) < size - 1100:
        head += b"X-Pad-%d: %s\r\n" % (index, b"p" * 1000)
        index += 1
    return head + b"\r\n"


async def test_head_over_the_limit_in_one_piece_is_431(proxy: Proxy) -> None:
    port = daemon_port(proxy)
    reply = await exchange(port, big_head(port, proxy.token, MAX_HEAD + 4096))
    problem = assert_problem(reply, 431, proxy.token)
    assert problem["detail"] == "the request line and headers are larger than 64 KiB"
    assert proxy.upstream.seen == []


@fast_server_only
async def test_head_over_the_limit_sent_slowly_is_431_before_it_ends(proxy: Proxy) -> None:
    port = daemon_port(proxy)
    head = big_head(port, proxy.token, 4 * MAX_HEAD)[:-2]  # never ended
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for start in range(0, len(head), 4096):
            writer.write(head[start : start + 4096])
            await writer.drain()
            await asyncio.sleep(0.005)
            if start + 4096 > MAX_HEAD:
                # The answer is due now; bytes written after the daemon closed
                # would make the kernel reset the connection, answer and all.
                break
        reply = await read_reply(reader)
    finally:
        writer.close()
    problem = assert_problem(reply, 431, proxy.token)
    assert problem["detail"] == "the request line and headers are larger than 64 KiB"
    assert reply.closed
    assert proxy.upstream.seen == []


async def test_head_under_the_limit_is_served(proxy: Proxy) -> None:
    port = daemon_port(proxy)
    head = big_head(port, proxy.token, MAX_HEAD - 2048)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for start in range(0, len(head), 1000):  # piecemeal: the slow path counts too
            writer.write(head[start : start + 1000])
            await writer.drain()
        reply = await read_reply(reader)
    finally:
        writer.close()
    assert reply.status == 200, reply
    assert len(proxy.upstream.seen) == 1


async def test_unread_body_is_not_counted_as_a_head(proxy: Proxy) -> None:
    """A body the handler never read, drained after the answer, is no request head."""
    port = daemon_port(proxy)
    host = f"Host: 127.0.0.1:{port}\r\n"
    body = b"x" * (3 * MAX_HEAD)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # /healthz takes no POST: the 405 goes out before the body is read.
        writer.write(
            f"POST /healthz HTTP/1.1\r\n{host}Content-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        first = await read_reply(reader, eof_wait=0)
        for start in range(0, len(body), 8192):
            writer.write(body[start : start + 8192])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(f"GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
        await writer.drain()
        second = await read_reply(reader)
    finally:
        writer.close()
    assert first.status == 405
    assert second.status == 200, second


@pytest.fixture
async def quick_idle(
    tmp_path: Path,
    start_upstream: StartUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> tuple[TestClient[web.Request, web.Application], str]:
    """The proxy of tests/support/upstream.py with ``[server] idle_timeout = "1s"``."""
    upstream = await start_upstream()
    quick = '[server]\nidle_timeout = "1s"\n'
    client, config, _ = await vaultd_for(upstream.url, tmp_path, aiohttp_client, quick)
    _, token = client.app[VAULT].sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=600, known_services=config.services
    )
    return client, token


async def _closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from ``started`` until the daemon closed the connection (no bytes sent)."""
    data = await asyncio.wait_for(reader.read(), timeout=10)
    assert data == b"", data
    return time.monotonic() - started


async def test_a_connection_that_sends_nothing_is_closed(
    quick_idle: tuple[TestClient[web.Request, web.Application], str],
) -> None:
    client, _ = quick_idle
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        assert 0.9 <= await _closed_after(reader, started) < 4
    finally:
        writer.close()


async def test_a_head_that_never_ends_is_cut_by_idle_timeout(
    quick_idle: tuple[TestClient[web.Request, web.Application], str],
) -> None:
    client, token = quick_idle
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)

    async def trickle() -> None:
        writer.write(
            f"GET {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n"
            f"Authorization: Bearer {token}\r\nX-Slow: ".encode()
        )
        while True:  # a byte now and then does not keep the connection
            await asyncio.sleep(0.2)
            writer.write(b"a")

    sender = asyncio.create_task(trickle())
    try:
        assert 0.9 <= await _closed_after(reader, started) < 4
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def test_an_idle_kept_alive_connection_is_closed(
    quick_idle: tuple[TestClient[web.Request, web.Application], str],
) -> None:
    client, _ = quick_idle
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n\r\n".encode())
        await writer.drain()
        reply = await read_reply(reader, eof_wait=0)
        answered = time.monotonic()
        assert reply.status == 200
        assert 0.5 <= await _closed_after(reader, answered) < 4
    finally:
        writer.close()


async def test_a_long_answer_is_not_cut_by_idle_timeout(
    quick_idle: tuple[TestClient[web.Request, web.Application], str],
) -> None:
    client, token = quick_idle
    started = time.monotonic()
    response = await client.get("/proxy/openai/v1/sse?n=7&gap=0.25", headers=bearer(token))
    assert response.status == 200
    body = await response.read()
    assert time.monotonic() - started > 1.5  # well past the 1 s idle_timeout
    assert body.count(b"data: ") == 7


# -- Expect: the guard speaks before any 100 Continue ---------------------------------


@pytest.mark.parametrize(
    ("target", "bad"),
    [
        (TARGET, "Host: evil.example"),
        (TARGET, "Host: 127.0.0.1\r\nOrigin: https://evil.example"),
        ("/api/sessions", "Host: 127.0.0.1\r\nSec-Fetch-Site: cross-site"),
    ],
)
async def test_a_refused_request_gets_no_100_continue(proxy: Proxy, target: str, bad: str) -> None:
    """aiohttp answers Expect before any middleware: vaultd's answer must be the refusal."""
    head = (
        f"POST {target} HTTP/1.1\r\n{bad}\r\nAuthorization: Bearer {proxy.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon_port(proxy))
    try:
        writer.write(head.encode())
        await writer.drain()
        reply = await read_reply(reader, eof_wait=0)  # no body sent: none was asked for
    finally:
        writer.close()
    assert_problem(reply, 403, proxy.token)
    assert proxy.upstream.seen == []


async def test_an_allowed_request_gets_100_continue_then_its_answer(proxy: Proxy) -> None:
    head = (
        f"POST {TARGET} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {proxy.token}\r\n"
        "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon_port(proxy))
    try:
        writer.write(head.encode())
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        await writer.drain()
        reply = await read_reply(reader, eof_wait=0)
    finally:
        writer.close()
    assert reply.status == 200
    assert proxy.upstream.seen[-1].body == b"{}"
