"""The proxy through real sockets: injection, stripping, streaming, refusals, usage."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.http import bearer
from tests.support.upstream import ANTHROPIC_KEY, OPENAI_KEY, OTHER_KEY, Proxy
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE

ALL_KEYS = (
    OPENAI_KEY,
    ANTHROPIC_KEY,
    OTHER_KEY,
    "HDRKEYhdrkey0005",
    "QUERYKEYquerykey0007",
    "s3cret-PASSWORD-0006",
    "ghp_GITHUBKEYgithubkey0004",
)


async def raw_request(proxy: Proxy, target: str, extra: str = "") -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalising)."""
    port = proxy.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {proxy.token}\r\n{extra}Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_bearer_injection_and_redacted_echo(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/v1/models?limit=2&order=asc", headers=proxy.auth())
    assert resp.status == 200
    text = await resp.text()
    seen = proxy.upstream.seen[-1]
    assert seen.path_qs == "/v1/models?limit=2&order=asc"
    assert seen.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert proxy.token not in json.dumps(seen.headers)
    # The upstream echoed the key back: the client gets it redacted.
    assert OPENAI_KEY not in text
    assert json.loads(text)["headers"]["Authorization"] == "Bearer [REDACTED]"
    assert "X-Request-Id" in resp.headers


async def test_header_auth_with_template_and_base_path(proxy: Proxy) -> None:
    resp = await proxy.client.post("/proxy/hdr/items", json={"a": 1}, headers=proxy.auth())
    assert resp.status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.path_qs == "/hdr/items"
    assert seen.headers["X-Custom-Key"] == "token HDRKEYhdrkey0005"
    assert "Authorization" not in seen.headers
    assert seen.body == b'{"a": 1}'


async def test_sdk_header_token_and_default_headers(proxy: Proxy) -> None:
    resp = await proxy.client.post(
        "/proxy/anthropic/v1/messages", json={}, headers={"x-api-key": proxy.token}
    )
    assert resp.status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    resp = await proxy.client.post(
        "/proxy/anthropic/v1/messages",
        json={},
        headers={"x-api-key": proxy.token, "anthropic-version": "2099-01-01"},
    )
    assert proxy.upstream.seen[-1].headers["anthropic-version"] == "2099-01-01"


async def test_basic_auth(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/basicsvc/x", headers=proxy.auth())
    assert resp.status == 200
    expected = base64.b64encode(b"alice:s3cret-PASSWORD-0006").decode()
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Basic {expected}"


async def test_query_auth_replaces_client_param(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/querysvc/search?q=cats&key=attacker", headers=proxy.auth()
    )
    assert resp.status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.path_qs == "/search?q=cats&key=QUERYKEYquerykey0007"
    assert "Authorization" not in seen.headers


async def test_hop_by_hop_and_vaultd_headers_stripped(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/openai/x",
        headers={
            **proxy.auth(),
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9v",
            "TE": "trailers",
            "X-Vaultd-Debug": "1",
            "X-Kept": "yes",
        },
    )
    assert resp.status == 200
    seen = {k.lower() for k in proxy.upstream.seen[-1].headers}
    for gone in ("x-secret-hop", "keep-alive", "proxy-authorization", "te", "x-vaultd-debug"):
        assert gone not in seen
    assert "x-kept" in seen
    assert proxy.upstream.seen[-1].headers["Host"] == f"127.0.0.1:{proxy.upstream.server.port}"


async def test_choose_credential_by_name_or_id(proxy: Proxy) -> None:
    await proxy.client.get(
        "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": "second"}
    )
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {OTHER_KEY}"
    await proxy.client.get(
        "/proxy/openai/x",
        headers={**proxy.auth(), "X-Vaultd-Credential": proxy.keys["openai/second"]},
    )
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {OTHER_KEY}"
    assert "x-vaultd-credential" not in {k.lower() for k in proxy.upstream.seen[-1].headers}
    before = len(proxy.upstream.seen)
    for wanted in ("nosuch", proxy.keys["anthropic/main"], "main"):
        resp = await proxy.client.get(
            "/proxy/openai/x", headers={**proxy.auth(), "X-Vaultd-Credential": wanted}
        )
        assert resp.status == 404
        body = await resp.json()
        assert body["type"].endswith("/no-credential")
    assert len(proxy.upstream.seen) == before


async def test_expired_and_missing_default_never_injected(proxy: Proxy) -> None:
    vault = proxy.client.app[VAULT]
    vault.db.execute(
        "UPDATE credentials SET expires_at = ? WHERE name = 'primary'", [int(time.time()) - 1]
    )
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
    assert resp.status == 404
    assert "expired" in (await resp.json())["detail"]
    vault.db.execute("UPDATE credentials SET is_default = 0 WHERE service = 'github'")
    resp = await proxy.client.get("/proxy/github/x", headers=proxy.auth())
    assert resp.status == 404
    assert proxy.upstream.seen == []


async def test_refusals_happen_before_any_upstream_request(proxy: Proxy) -> None:
    github_only = proxy.mint(services=["github"])
    read_only = proxy.mint(scopes=["read"])
    cases = [
        ({}, 401),
        ({"Authorization": "Bearer fn_sess_" + "A" * 43}, 401),
        (bearer(github_only), 403),
        (bearer(read_only), 403),
        ({"x-api-key": github_only}, 403),
    ]
    for headers, status in cases:
        resp = await proxy.client.get("/proxy/openai/v1/models", headers=headers)
        assert resp.status == status, headers
        body = await resp.json()
        assert resp.content_type == "application/problem+json"
        assert github_only not in json.dumps(body)
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await proxy.client.get("/proxy/nosuchservice/x", headers=proxy.auth())
    assert resp.status == 404
    assert proxy.upstream.seen == []
    # github_only is fine on github
    resp = await proxy.client.get("/proxy/github/user", headers=bearer(github_only))
    assert resp.status == 200


async def test_revoked_token_fails_on_next_request(proxy: Proxy) -> None:
    token = proxy.mint()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))).status == 200
    # Revoked by another connection, as the CLI in another process would.
    conn = sqlite3.connect(proxy.config.db_path)
    conn.execute("UPDATE sessions SET revoked_at = 1")
    conn.commit()
    conn.close()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth(token))).status == 401


@pytest.mark.parametrize(
    "target",
    [
        "/proxy/openai//127.0.0.1:{bport}/x",
        "/proxy/openai/%2F%2F127.0.0.1:{bport}/x",
        "/proxy/openai/%2f%2f127.0.0.1:{bport}/x",
        "/proxy/openai/http://127.0.0.1:{bport}/x",
        "/proxy/openai/..%2f..%2fx",
        "/proxy/openai/%2e%2e/%2e%2e/x",
        "/proxy/openai/../../x",
        "/proxy/openai/v1/./x",
        "/proxy/openai/a%5c..%5cb",
        "/proxy/openai/x%0d%0aHost:%20evil",
        "http://127.0.0.1:{bport}/proxy/openai/x",
        "/proxy/openai/@127.0.0.1:{bport}/x",
        "/proxy/openai/x?@127.0.0.1:{bport}",
        "/proxy/openai/x#@127.0.0.1:{bport}",
        "/proxy/openai:{bport}/x",
        "/proxy/openai@127.0.0.1:{bport}/x",
    ],
)
async def test_path_tricks_never_reach_another_host(proxy: Proxy, target: str) -> None:
    target = target.format(bport=proxy.bystander.server.port)
    status, data = await raw_request(proxy, target)
    assert proxy.bystander.seen == []
    assert status < 500, data
    assert OPENAI_KEY.encode() not in data
    if status < 400:
        # Allowed only as a plain path on the configured upstream itself.
        assert len(proxy.upstream.seen) == 1
        assert proxy.upstream.seen[0].path_qs.startswith("/")


async def test_redirect_is_returned_not_followed(proxy: Proxy) -> None:
    resp = await proxy.client.get(
        "/proxy/openai/redirect", headers=proxy.auth(), allow_redirects=False
    )
    assert resp.status == 302
    assert resp.headers["Location"] == proxy.bystander.url + "/stolen"
    assert proxy.bystander.seen == []


async def test_upstream_down_is_502(proxy: Proxy, unused_tcp_port: int) -> None:
    from vaultd.services import build_service

    services = dict(proxy.config.services)
    services["openai"] = build_service(
        "openai", {"base_url": f"http://127.0.0.1:{unused_tcp_port}"}, services["openai"]
    )
    object.__setattr__(proxy.config, "services", services)
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
    assert resp.status == 502
    body = await resp.json()
    assert body["type"].endswith("/upstream-unreachable")
    assert OPENAI_KEY not in json.dumps(body)


async def test_upstream_slow_is_504(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/slow?s=3", headers=proxy.auth())
    assert resp.status == 504
    assert (await resp.json())["type"].endswith("/upstream-timeout")


async def test_body_over_limit_is_413_with_length(proxy: Proxy) -> None:
    resp = await proxy.client.post(
        "/proxy/openai/sink", data=b"x" * (64 * 1024 + 1), headers=proxy.auth()
    )
    assert resp.status == 413
    assert proxy.upstream.seen == []


async def test_body_over_limit_is_413_when_streamed(proxy: Proxy) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):  # 40 x 4 KiB = 160 KiB, chunked, no length known up front
            yield b"y" * 4096
            await asyncio.sleep(0)

    resp = await proxy.client.post("/proxy/openai/sink", data=chunks(), headers=proxy.auth())
    assert resp.status == 413
    assert (await resp.json())["type"].endswith("/payload-too-large")


async def test_body_under_limit_streams_through(proxy: Proxy) -> None:
    resp = await proxy.client.post(
        "/proxy/openai/sink", data=b"z" * (60 * 1024), headers=proxy.auth()
    )
    assert resp.status == 200
    assert (await resp.json()) == {"received": 60 * 1024}


async def test_sse_events_arrive_as_sent(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/v1/sse?n=4&gap=0.3", headers=proxy.auth())
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    arrivals: list[float] = []
    events: list[bytes] = []
    buffer = b""
    start = time.monotonic()
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append(event)
            arrivals.append(time.monotonic() - start)
    assert [json.loads(e.removeprefix(b"data: ")) for e in events] == [{"i": i} for i in range(4)]
    # Streamed, not buffered: the first event is there long before the last.
    assert arrivals[0] < 0.25
    assert arrivals[-1] - arrivals[0] > 0.6


async def test_gzip_answer_despite_identity_is_refused(proxy: Proxy) -> None:
    """vaultd asks for identity so that it can redact; a body compressed anyway is not passed.

    (The fake upstream compresses whatever it is asked; tests/proxy/test_hostile_peers.py
    has one that honours Accept-Encoding.)
    """
    resp = await proxy.client.get(
        "/proxy/openai/gzip",
        headers={**proxy.auth(), "Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert resp.status == 502
    assert (await resp.json())["type"].endswith("/upstream-encoding")
    assert proxy.upstream.seen[-1].headers["Accept-Encoding"] == "identity"


async def test_key_split_across_chunks_is_redacted(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/reflect-key", headers=proxy.auth())
    assert resp.status == 401  # the upstream's status, passed through
    body = await resp.read()
    assert OPENAI_KEY.encode() not in body
    assert body.count(b"[REDACTED]") == 2


async def test_tampered_credential_is_never_sent(proxy: Proxy) -> None:
    db = proxy.client.app[VAULT].db
    # Someone with the database file points the openai key at github.
    db.execute("UPDATE credentials SET is_default = 0 WHERE name = 'gh'")
    db.execute("UPDATE credentials SET service = 'github', is_default = 1 WHERE name = 'primary'")
    resp = await proxy.client.get("/proxy/github/x", headers=proxy.auth())
    assert 400 <= resp.status < 600 and resp.status != 500
    assert proxy.upstream.seen == []
    assert OPENAI_KEY not in await resp.text()


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_usage_written_behind_within_a_flush(proxy: Proxy) -> None:
    for _ in range(3):
        resp = await proxy.client.get("/proxy/openai/x?token=abc", headers=proxy.auth())
        assert resp.status == 200

    def counted() -> bool:
        conn = sqlite3.connect(proxy.config.db_path)
        row = conn.execute(
            "SELECT use_count, last_used_at FROM credentials WHERE id = ?",
            [proxy.keys["openai/primary"]],
        ).fetchone()
        conn.close()
        return bool(row[0] == 3 and row[1])

    await wait_for(counted, timeout=3 * proxy.config.usage_flush_interval + 2)
    conn = sqlite3.connect(proxy.config.db_path)
    sessions = conn.execute("SELECT last_used_at FROM sessions WHERE name = 'default'").fetchone()
    rows = conn.execute("SELECT * FROM audit").fetchall()
    conn.close()
    assert sessions[0] is not None
    assert len(rows) == 3
    dump = json.dumps(rows)
    assert "/x" in dump and "token=abc" not in dump and "?" not in dump
    for secret in (*ALL_KEYS, proxy.token):
        assert secret not in dump


async def test_nothing_secret_in_logs(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await proxy.client.get("/proxy/openai/x?key=zzz", headers=proxy.auth())
    await proxy.client.get("/proxy/querysvc/x", headers=proxy.auth())
    await proxy.client.get("/proxy/openai/reflect-key", headers=proxy.auth())
    await proxy.client.get("/proxy/openai/slow?s=3", headers=proxy.auth())
    await proxy.client.get(
        "/proxy/openai/x", headers={"Authorization": "Bearer " + proxy.token + "x"}
    )
    text = caplog.text
    for secret in (*ALL_KEYS, proxy.token):
        assert secret not in text


async def test_head_and_no_body_methods(proxy: Proxy) -> None:
    resp = await proxy.client.head("/proxy/openai/x", headers=proxy.auth())
    assert resp.status == 200
    resp = await proxy.client.delete("/proxy/openai/things/1", headers=proxy.auth())
    assert resp.status == 200
    assert proxy.upstream.seen[-1].method == "DELETE"


async def test_upstream_connections_are_kept_alive(proxy: Proxy) -> None:
    for _ in range(5):
        resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth())
        await resp.read()
    peers = {seen.peer for seen in proxy.upstream.seen}
    assert len(proxy.upstream.seen) == 5
    assert len(peers) == 1, "one pooled connection should carry sequential requests"


async def test_changes_through_the_api_apply_to_the_next_request(proxy: Proxy) -> None:
    """The proxy's in-memory lookups never outlive a write on the daemon's own connection."""
    admin = proxy.mint(scopes=["admin"])
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    rotated = "sk-proj-ROTATEDviaAPI0000000099"
    resp = await proxy.client.patch(
        f"/api/credentials/{proxy.keys['openai/primary']}",
        json={"secret": rotated},
        headers=proxy.auth(admin),
    )
    assert resp.status == 200
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {rotated}"
    # A token revoking itself is refused on its very next request.
    session_id = next(
        s["id"]
        for s in await (await proxy.client.get("/api/sessions", headers=proxy.auth())).json()
        if s["name"] == "default"
    )
    resp = await proxy.client.delete(f"/api/sessions/{session_id}", headers=proxy.auth())
    assert resp.status == 204
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 401


async def test_changes_from_another_process_apply_to_the_next_request(proxy: Proxy) -> None:
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    conn = sqlite3.connect(proxy.config.db_path)
    conn.execute(
        "UPDATE credentials SET is_default = CASE name WHEN 'second' THEN 1 ELSE 0 END"
        " WHERE service = 'openai'"
    )
    conn.commit()
    conn.close()
    assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {OTHER_KEY}"


async def test_upstream_request_id_is_kept_beside_ours(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/v1/models", headers=proxy.auth())
    assert resp.status == 200
    assert resp.headers["X-Upstream-Request-Id"] == "req_upstream_123"
    assert resp.headers["X-Request-Id"] != "req_upstream_123"
    assert len(resp.headers.getall("X-Request-Id")) == 1


async def test_access_log_skips_good_proxy_calls_but_not_failures(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="vaultd.access"):
        assert (await proxy.client.get("/proxy/openai/x", headers=proxy.auth())).status == 200
        assert (await proxy.client.get("/proxy/openai/x")).status == 401
        assert (await proxy.client.get("/api/services", headers=proxy.auth())).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "vaultd.access"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("GET /proxy/openai/x 401 ")
    assert lines[1].startswith("GET /api/services 200 ")


async def audit_statuses(proxy: Proxy) -> list[tuple[str, int]]:
    await proxy.client.app[USAGE].flush()
    conn = sqlite3.connect(proxy.config.db_path)
    try:
        rows = conn.execute("SELECT path, status FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(path, status) for path, status in rows]


async def test_client_leaving_mid_stream_is_audited_499(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    port = proxy.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /proxy/openai/v1/sse?n=30&gap=0.05 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {proxy.token}\r\n\r\n".encode()
    )
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout=10)
    assert b"data:" in first
    writer.close()  # gone mid-stream
    deadline = time.monotonic() + 10
    while ("/v1/sse", 499) not in await audit_statuses(proxy):
        assert time.monotonic() < deadline, await audit_statuses(proxy)
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_upstream_breaking_off_truncates_and_is_audited_502(proxy: Proxy) -> None:
    resp = await proxy.client.get("/proxy/openai/broken", headers=proxy.auth())
    assert resp.status == 200  # the upstream's status went out before it broke
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert ("/broken", 502) in await audit_statuses(proxy)


async def test_head_keeps_content_length(proxy: Proxy) -> None:
    resp = await proxy.client.head("/proxy/openai/gzip", headers=proxy.auth())
    assert resp.status == 200
    assert "Content-Length" in resp.headers
