"""Findings of a hostile review of the remote sources (DESIGN 13), one test each.

Every test talks only to 127.0.0.1 (fake source servers made with aiohttp,
the in-process daemon of ``test_remote_failures``) and is bounded in time.
Each one fails while the bug it names is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.sources import (
    KEY,
    Rig,
    fake_source,
    start_rig,
    token_file,
    token_file_source,
    until,
)
from vaultd.http.appkeys import VAULT
from vaultd.models import remote_id
from vaultd.sourceconfig import SourceSettings
from vaultd.sources.catalog import Catalog
from vaultd.sources.errors import CredentialDeleted
from vaultd.sources.kv import MAX_KEYS
from vaultd.sources.source import SOURCES, Source, Sources

MakeServer = Callable[..., Awaitable[TestServer]]
MakeClient = Callable[..., Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICES = {"openai": object(), "github": object()}
TOP = "/v1/secret/metadata/vaultd/"
OPENAI = "/v1/secret/metadata/vaultd/openai/"
DATA = "/v1/secret/data/vaultd/openai/"


async def _one_round(tmp_path: Path, port: int | None) -> Catalog:
    """A catalog after one round of a source at ``port`` (token_file auth)."""
    settings = _settings(tmp_path, port)
    catalog = Catalog([settings])
    source = Source(settings, catalog, lambda: SERVICES)
    try:
        await source.round()
    finally:
        await source.close()
    return catalog


def _secret(value: str = KEY, custom: dict[str, str] | None = None) -> web.Response:
    meta: dict[str, object] = {"version": 1, "created_time": "2024-01-01T00:00:00Z"}
    if custom is not None:
        meta["custom_metadata"] = custom
    return web.json_response({"data": {"data": {"secret": value}, "metadata": meta}})


def _keys(*keys: str) -> web.Response:
    return web.json_response({"data": {"keys": list(keys)}})


def _lookup_self() -> web.Response:
    return web.json_response({"data": {"ttl": 0, "renewable": False}})


def _settings(tmp_path: Path, port: int | None, **more: Any) -> SourceSettings:
    assert port is not None
    base: dict[str, Any] = {
        "name": "team",
        "type": "openbao",
        "url": f"http://127.0.0.1:{port}",
        "mount": "secret",
        "prefix": "vaultd",
        "auth": "token_file",
        "token_file": token_file(tmp_path),
        "refresh_interval": 300,
        "max_stale": 3600,
    }
    base.update(more)
    return SourceSettings(**base)


def _reap_dead_rounds(rig: Rig) -> None:
    """A round task that died of an exception would fail the app's cleanup (and so
    this test's teardown) on top of the assertion that shows the bug: retrieve it."""
    sources: Sources = rig.client.app[SOURCES]
    for task in list(sources._tasks):
        if task.done() and not task.cancelled():
            task.exception()
            sources._tasks.remove(task)


async def _daemon_with(
    tmp_path: Path,
    handler: Handler,
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
    *,
    extra: str = "",
) -> Rig:
    source = await aiohttp_server(fake_source([], handler), host="127.0.0.1")
    table = token_file_source(f"http://127.0.0.1:{source.port}", token_file(tmp_path)) + extra
    return await start_rig(tmp_path, table, aiohttp_server, aiohttp_client)


def _plain_source(data: Handler) -> Handler:
    """A token_file source holding openai/team, whose data read ``data`` answers."""

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/token/lookup-self":
            return _lookup_self()
        if path == TOP:
            return _keys("openai/")
        if path == OPENAI:
            return _keys("team")
        if path == DATA + "team":
            return await data(request)
        return web.json_response({"errors": []}, status=404)

    return answer


# -- 1. what the source answers escapes as something other than a clear error --------


async def test_a_unicode_digit_expires_at_is_a_503_not_a_500(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> None:
    """``kv._expires_at`` tests ``str.isdigit()`` (true for "²") then calls ``int()``,
    whose ValueError nothing catches: the proxied request is a 500 and the
    source's round task dies."""

    async def data(request: web.Request) -> web.StreamResponse:
        return _secret(custom={"expires_at": "²"})

    r = await _daemon_with(tmp_path, _plain_source(data), aiohttp_server, aiohttp_client)
    try:
        status, body = await r.chat()
        assert status == 503, body
        assert str(body["type"]).endswith("/source-secret-invalid")
        assert r.seen == []
    finally:
        _reap_dead_rounds(r)


async def test_a_deeply_nested_json_answer_is_a_503_not_a_500(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> None:
    """``client.call`` catches ValueError from ``json.loads`` but not the RecursionError
    a 200 KB answer of nested arrays raises (well under MAX_ANSWER)."""

    async def data(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" * 200_000, content_type="application/json")

    r = await _daemon_with(tmp_path, _plain_source(data), aiohttp_server, aiohttp_client)
    try:
        status, body = await r.chat()
        assert status == 503, body
        assert r.seen == []
    finally:
        _reap_dead_rounds(r)


async def test_one_listing_without_data_keys_does_not_stop_the_rounds_for_good(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> None:
    """``parse_listing`` raises SourceUnavailable (a VaultdError, not SourceDown);
    ``Source.round`` catches only SourceDown and AuthFailed, so ``Source.run``
    ends: no round ever runs again (no new credential, no re-listing) until a
    restart. Here the server answers one bad listing, then good ones."""
    bad = [True]

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/token/lookup-self":
            return _lookup_self()
        if path == TOP:
            if bad[0]:
                bad[0] = False
                return web.json_response({"data": {}})
            return _keys("openai/")
        if path == OPENAI:
            return _keys("team")
        if path == DATA + "team":
            return _secret()
        return web.json_response({"errors": []}, status=404)

    r = await _daemon_with(tmp_path, answer, aiohttp_server, aiohttp_client)
    try:
        await asyncio.sleep(2.5)  # the bad round and (refresh_interval 1 s) the next
        (task,) = r.client.app[SOURCES]._tasks
        assert not task.done(), f"the rounds ended: {task.exception()!r}"

        async def served() -> bool:
            return (await r.chat())[0] == 200

        # refresh_interval is 1 s: the next round should list and read it.
        await until(served, 6.0, step=0.25)
    finally:
        _reap_dead_rounds(r)


async def test_doctor_reports_a_listing_without_data_keys_as_a_fail_line(
    tmp_path: Path, aiohttp_server: MakeServer
) -> None:
    """``probe._probe`` catches AuthFailed and SourceDown only; the listing's
    SourceUnavailable escapes ``probe_sources`` and ``vaultd doctor`` prints one
    ``Error:`` line instead of its checks (every other check is lost)."""
    from vaultd.sources.probe import _probe

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/auth/token/lookup-self":
            return _lookup_self()
        return web.json_response({"data": {"nokeys": True}})

    server = await aiohttp_server(fake_source([], answer), host="127.0.0.1")
    level, message, _listed = await _probe(_settings(tmp_path, server.port), SERVICES)
    assert level == "FAIL", message


# -- 2. a server that hangs makes requests wait, although it is known to be down -------


async def test_a_hung_source_does_not_make_each_request_wait_for_it(
    tmp_path: Path,
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the server hangs (a firewall dropping packets, an overloaded server),
    ``_down`` sets ``down_until`` to at most min(refresh_interval, 2**n) s, and the
    next round starts exactly when it lapses and itself hangs for
    TOTAL_TIMEOUT: in that window every request for a stale secret starts a
    read and waits the whole TOTAL_TIMEOUT (15 s in production) before it is
    served the stale value, although the source is known to be down."""
    import vaultd.sources.client as client_module

    monkeypatch.setattr(client_module, "TOTAL_TIMEOUT", 2.0)
    hang = asyncio.Event()
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        if hang.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 20.0)
        return await _plain_source(lambda _r: _async(_secret()))(request)

    r = await _daemon_with(tmp_path, answer, aiohttp_server, aiohttp_client)
    try:
        assert (await r.chat())[0] == 200
        hang.set()
        state = r.client.app[SOURCES].catalog.sources["team"]

        async def down() -> bool:
            return state.status == "unreachable"

        await until(down, 6.0)
        slowest = 0.0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, _ = await r.chat()
            slowest = max(slowest, time.monotonic() - started)
            assert status == 200  # the stale value (max_stale is 1 h)
            await asyncio.sleep(0.1)
        assert slowest < 1.0, f"a request waited {slowest:.1f}s on a source known to be down"
    finally:
        release.set()


async def _async(value: web.StreamResponse) -> web.StreamResponse:
    return value


# -- 3. a 403 on one path: logins per read, and a whole source dropped ----------------


async def test_a_secret_the_policy_forbids_does_not_cost_a_login_per_read(
    tmp_path: Path, aiohttp_server: MakeServer
) -> None:
    """``Source._call`` answers every 403 with ``auth.login()``. A 403 on a data
    path is a policy refusal as often as a dead token: with four secrets the
    policy denies, each round makes four fresh AppRole logins (four more
    tokens left alive on the server, four uses of a secret_id that may have
    ``secret_id_num_uses``), for ever, every refresh_interval."""
    logins: list[float] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/approle/login":
            logins.append(time.monotonic())
            return web.json_response(
                {"auth": {"client_token": "s.tok", "lease_duration": 3600, "renewable": True}}
            )
        if path == TOP:
            return _keys("openai/")
        if path == OPENAI:
            return _keys("a", "b", "c", "d", "ok")
        if path == DATA + "ok":
            return _secret()
        if path.startswith(DATA):
            return web.json_response({"errors": ["permission denied"]}, status=403)
        return web.json_response({"errors": []}, status=404)

    server = await aiohttp_server(fake_source([], answer), host="127.0.0.1")
    secret_id = tmp_path / "secret-id"
    secret_id.write_text("sid-0000")
    secret_id.chmod(0o600)
    settings = _settings(
        tmp_path,
        server.port,
        auth="approle",
        token_file=None,
        role_id="role-0000",
        secret_id_file=secret_id,
    )
    catalog = Catalog([settings])
    source = Source(settings, catalog, lambda: SERVICES)
    try:
        await source.round()
        await source.round()
    finally:
        await source.close()
    assert catalog.secret(remote_id("team", "openai", "ok"), wait=False) == KEY
    assert len(logins) <= 2, f"{len(logins)} AppRole logins for two rounds"


async def test_one_unlistable_service_folder_does_not_drop_every_credential(
    tmp_path: Path, aiohttp_server: MakeServer
) -> None:
    """A least-privilege policy lists ``vaultd/openai/`` but not ``vaultd/github/``
    (the top listing still shows ``github/``): ``list_folder`` turns that one
    403 into AuthFailed, and ``round`` into ``_refused``, which drops every
    secret of the source: openai's key, readable, is refused too."""

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/token/lookup-self":
            return _lookup_self()
        if path == TOP:
            return _keys("openai/", "github/")
        if path == OPENAI:
            return _keys("team")
        if path == "/v1/secret/metadata/vaultd/github/":
            return web.json_response({"errors": ["permission denied"]}, status=403)
        if path == DATA + "team":
            return _secret()
        return web.json_response({"errors": []}, status=404)

    server = await aiohttp_server(fake_source([], answer), host="127.0.0.1")
    catalog = await _one_round(tmp_path, server.port)
    assert catalog.secret(remote_id("team", "openai", "team"), wait=False) == KEY


# -- 4. a read that lands after the round dropped the secret revives it --------------


async def test_a_late_read_does_not_revive_a_credential_the_round_dropped(
    tmp_path: Path, aiohttp_server: MakeServer
) -> None:
    """``Entry.stored`` resets status, ``gone_at`` and ``fetched_at`` whatever
    happened since the read was sent: a read answered just before the secret
    was deleted (or vaultd's token revoked) and delivered after the round that
    dropped it makes it ``ok`` and *fresh* again: served for another whole
    refresh_interval after "the next refresh drops the key"."""
    listed = ["team"]
    slow = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/token/lookup-self":
            return _lookup_self()
        if path == TOP:
            return _keys("openai/")
        if path == OPENAI:
            return _keys(*listed) if listed else web.json_response({"errors": []}, status=404)
        if path == DATA + "team":
            answer = _secret()  # made now, delivered late
            if slow.is_set():
                await asyncio.sleep(0.8)
            return answer
        return web.json_response({"errors": []}, status=404)

    server = await aiohttp_server(fake_source([], answer), host="127.0.0.1")
    settings = _settings(tmp_path, server.port)
    catalog = Catalog([settings])
    source = Source(settings, catalog, lambda: SERVICES)
    cid = remote_id("team", "openai", "team")
    try:
        await source.round()
        assert catalog.secret(cid, wait=False) == KEY
        entry = catalog.get(cid)
        assert entry is not None
        slow.set()
        late = asyncio.ensure_future(source.read(entry))  # a request's read
        await asyncio.sleep(0.2)
        listed.clear()  # deleted at the source (kv metadata delete)
        await source.round()
        with pytest.raises(CredentialDeleted):
            catalog.secret(cid, wait=False)
        await asyncio.wait_for(late, 5.0)
        with pytest.raises(CredentialDeleted):
            catalog.secret(cid, wait=False)
    finally:
        await source.close()


# -- 5. local writes and the catalog ---------------------------------------------------


async def test_a_local_credential_can_be_added_while_a_source_is_down(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> None:
    """``create_credential`` asks ``catalog.find(service, name)``, which raises 503
    ``source-unavailable`` when the name is not in the catalog and a source is
    unreachable: POST /api/credentials (the API's and the page's "add") fails
    for a purely local write while the team's server is down."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    table = token_file_source(f"http://127.0.0.1:{closed_port}", token_file(tmp_path))
    r = await start_rig(tmp_path, table, aiohttp_server, aiohttp_client)
    state = r.client.app[SOURCES].catalog.sources["team"]

    async def down() -> bool:
        return state.listed and state.status == "unreachable"

    await until(down, 5.0)
    _s, admin = r.client.app[VAULT].sessions.create(
        name="admin", scopes=["admin"], services=["*"], ttl=600, known_services=r.config.services
    )
    resp = await r.client.post(
        "/api/credentials",
        headers={"Authorization": f"Bearer {admin}"},
        json={"service": "openai", "name": "mine", "secret": "sk-proj-LOCALlocalLOCAL0000001"},
    )
    assert resp.status == 201, await resp.text()


async def test_renaming_a_local_credential_to_a_remote_ones_name_is_409(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> None:
    """POST refuses a local credential named as a remote one (409 read-only-source),
    but PATCH ``{"name": ...}`` of a local credential to that name is let
    through: the local copy then shadows the team's key for every client
    that names it (the proxy asks the vault first)."""

    async def data(request: web.Request) -> web.StreamResponse:
        return _secret()

    r = await _daemon_with(tmp_path, _plain_source(data), aiohttp_server, aiohttp_client)
    vault = r.client.app[VAULT]
    local = vault.credentials.add(
        vault.unlock(), service="openai", name="mine", secret="sk-proj-LOCALlocalLOCAL0000001"
    )
    await r.listed()
    _s, admin = vault.sessions.create(
        name="admin", scopes=["admin"], services=["*"], ttl=600, known_services=r.config.services
    )
    headers = {"Authorization": f"Bearer {admin}"}
    resp = await r.client.post(
        "/api/credentials",
        headers=headers,
        json={"service": "openai", "name": "team", "secret": "sk-proj-LOCALlocalLOCAL0000002"},
    )
    assert resp.status == 409  # as the code means it
    resp = await r.client.patch(
        f"/api/credentials/{local.id}", headers=headers, json={"name": "team"}
    )
    assert resp.status == 409, await resp.text()


def test_a_remote_name_equal_to_another_sources_id_does_not_win_a_lookup_by_id() -> None:
    """``Catalog._named`` tries names before ids, across sources. A (less trusted)
    second source can list an entry *named* like the first source's id; a
    client that pins ``X-Vaultd-Credential: <id of team-a's key>`` is then
    given team-b's key (its requests, prompts included, go out on team-b's
    account)."""

    def settings(name: str) -> SourceSettings:
        return SourceSettings(
            name, "openbao", "https://b.example", "secret", "vaultd", "token_file"
        )

    catalog = Catalog([settings("a"), settings("b")])
    trusted = catalog.entry("a", "openai", "prod")
    catalog.entry("b", "openai", trusted.id)
    found = catalog.find("openai", trusted.id, wait=False)
    assert found is not None
    assert found.id == trusted.id, "the id named team-b's entry"


# -- 6. what a hostile server puts in a log line -------------------------------------


async def test_a_control_character_in_a_custom_metadata_key_is_not_logged_raw(
    tmp_path: Path, aiohttp_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Listing names are logged as ``repr`` (a terminal may act on them), but a
    refused custom_metadata key reaches ``_warn_once`` (and the 503's detail)
    raw: ``ValidationError``'s one-line form is ``<last pointer segment>:
    ...``, and the segment is the key itself, ESC included."""
    caplog.set_level(logging.WARNING)

    async def data(request: web.Request) -> web.StreamResponse:
        return _secret(custom={"\x1b]0;owned\x07\x1b[2J": "x"})

    server = await aiohttp_server(fake_source([], _plain_source(data)), host="127.0.0.1")
    await _one_round(tmp_path, server.port)
    warned = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "custom_metadata" in warned
    assert "\x1b" not in warned and "\x07" not in warned


# -- 7. what a hostile server can make the daemon hold and compute -----------------------


def test_names_a_source_stops_listing_do_not_pile_up_in_memory() -> None:
    """A listing holds at most MAX_KEYS names, but ``Catalog.forget`` keeps every
    name that left it for ``max_stale``: a server that lists 1000 new names a
    round grows the catalog by 1000 entries per service per round (with the
    defaults, 5 min and 1 h: 12 000 per service, ~100 000 over the built-in
    services), each one also read from the server."""
    settings = SourceSettings(
        "team",
        "openbao",
        "https://b.example",
        "secret",
        "vaultd",
        "token_file",
        refresh_interval=300,
        max_stale=3600,
    )
    catalog = Catalog([settings])
    at = 1_700_000_000.0
    for round_no in range(12):
        listed = {catalog.entry("team", "openai", f"r{round_no}-{i}").id for i in range(MAX_KEYS)}
        catalog.forget("team", listed, now=at)
        at += 300
    held = sum(1 for _ in catalog.entries("team"))
    assert held <= 2 * MAX_KEYS, f"{held} entries held for one service"


def test_the_listing_is_not_quadratic_in_the_remote_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Catalog.listing`` once asked ``_default`` (a scan of the service's entries)
    for every entry: O(n^2) on the event loop per GET /api/credentials. It is
    asked once per service now; counted, not timed."""
    settings = SourceSettings(
        "team", "openbao", "https://b.example", "secret", "vaultd", "token_file"
    )
    catalog = Catalog([settings])
    services = ("openai", "anthropic", "github", "gemini")
    for service in services:
        for i in range(MAX_KEYS):
            catalog.entry("team", service, f"n{i}")
    calls: list[str] = []
    original = catalog._default  # what is counted

    def counted(service: str) -> Any:
        calls.append(service)
        return original(service)

    monkeypatch.setattr(catalog, "_default", counted)
    items = catalog.listing()
    assert len(items) == len(services) * MAX_KEYS
    assert sorted(calls) == sorted(services)
