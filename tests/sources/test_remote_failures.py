"""A source that is down, sealed, redirecting, lying or refusing (DESIGN 13).

Down or sealed: the last good value serves until ``max_stale``, then 503
``source-unavailable``; back: served again without a restart. A server
that redirects never gets the token sent on; one whose listing holds
hostile names is never asked for them. Files and tokens that cannot be
used are one clear line, in the daemon's start and in ``vaultd doctor``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.daemon import DaemonEnv
from tests.support.openbao import BaoTenant
from tests.support.sources import (
    KEY,
    PATH,
    Heard,
    MakeClient,
    MakeServer,
    Rig,
    fake_source,
    source_table,
    start_rig,
    token_file,
    token_file_source,
    until,
)
from vaultd.errors import UnsafePermissions


async def _refused_as(r: Rig, slug: str) -> bool:
    status, body = await r.chat()
    return status == 503 and str(body["type"]).endswith(f"/{slug}")


async def test_a_stopped_server_serves_the_last_key_until_max_stale_then_comes_back(
    bao_persistent: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao = bao_persistent
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s", max_stale="4s")
    assert (await r.chat())[0] == 200
    bao.stop()
    # Still served while the last good read is younger than max_stale ...
    assert (await r.chat())[0] == 200
    await until(lambda: _refused_as(r, "source-unavailable"), 8.0)
    # ... and nothing went upstream once it was refused.
    sent = len(r.seen)
    assert (await r.chat())[0] == 503
    assert len(r.seen) == sent
    bao.start()

    async def back() -> bool:
        return (await r.chat())[0] == 200

    # The rounds back off to at most refresh_interval (1 s) with jitter.
    await until(back, 10.0)
    assert r.sent_keys()[-1] == f"Bearer {KEY}"


async def test_a_sealed_server_is_unavailable_after_max_stale_and_served_once_unsealed(
    bao_exclusive: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao = bao_exclusive
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s", max_stale="3s")
    assert (await r.chat())[0] == 200
    bao.seal()

    async def stale() -> bool:
        items = [i for i in await r.listing() if i["service"] == "openai"]
        remote = items[0]["remote"]
        return isinstance(remote, dict) and remote["status"] == "stale"

    await until(stale, 5.0)
    assert (await r.chat())[0] == 200
    await until(lambda: _refused_as(r, "source-unavailable"), 8.0)
    bao.unseal()
    await until(lambda: _is_ok(r), 10.0)


async def _is_ok(r: Rig) -> bool:
    return (await r.chat())[0] == 200


async def test_a_redirect_is_never_followed_and_the_token_never_sent_on(
    tmp_path: Path,
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    elsewhere: Heard = []

    async def record(request: web.Request) -> web.StreamResponse:
        return web.json_response({"data": {"keys": ["openai/"]}})

    target = await aiohttp_server(fake_source(elsewhere, record), host="127.0.0.1")
    asked: Heard = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{target.port}{request.path_qs}")

    source = await aiohttp_server(fake_source(asked, redirect), host="127.0.0.1")
    token = "s.tokenthatmustnottravel0001"
    table = token_file_source(f"http://127.0.0.1:{source.port}", token_file(tmp_path, token))
    r = await start_rig(tmp_path, table, aiohttp_server, aiohttp_client)
    status, body = await r.chat()
    assert status == 503 and str(body["type"]).endswith("/source-unavailable"), body
    assert asked, "the source was asked"
    assert elsewhere == []  # the redirect target never heard of it
    assert r.seen == []
    messages = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "redirect (307)" in messages and token not in messages


async def test_hostile_names_in_a_listing_are_never_requested(
    tmp_path: Path,
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    asked: Heard = []
    hostile = ["..", "%2e%2e", "", "a\x1b[2Jb", "x/y", "good"]

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/auth/token/lookup-self":
            return web.json_response({"data": {"ttl": 0, "renewable": False}})
        if path == "/v1/secret/metadata/vaultd/":
            return web.json_response({"data": {"keys": ["openai/", "../", "%2e%2e/"]}})
        if path == "/v1/secret/metadata/vaultd/openai/":
            return web.json_response({"data": {"keys": hostile}})
        if path == "/v1/secret/data/vaultd/openai/good":
            return web.json_response(
                {"data": {"data": {"secret": KEY}, "metadata": {"version": 1}}}
            )
        return web.json_response({"errors": []}, status=404)

    source = await aiohttp_server(fake_source(asked, answer), host="127.0.0.1")
    table = token_file_source(f"http://127.0.0.1:{source.port}", token_file(tmp_path))
    r = await start_rig(tmp_path, table, aiohttp_server, aiohttp_client)
    assert (await r.chat())[0] == 200
    paths = [p for _m, p, _h in asked]
    assert set(paths) == {
        "/v1/auth/token/lookup-self",
        "/v1/secret/metadata/vaultd/?list=true",
        "/v1/secret/metadata/vaultd/openai/?list=true",
        "/v1/secret/data/vaultd/openai/good",
    }
    warned = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "not a plain name" in warned and "\x1b" not in warned


async def test_an_expired_token_file_is_unauthorized_and_doctor_says_so(
    bao: BaoTenant,
    tmp_path: Path,
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
) -> None:
    bao.kv_put(PATH, secret=KEY)
    made = bao.server.cli_json(
        "token", "create", "-format=json", f"-policy={bao.policy}", "-ttl=1s", "-renewable=false"
    )
    path = token_file(tmp_path, made["auth"]["client_token"])
    await asyncio.sleep(1.5)
    table = token_file_source(bao.url, path).replace(
        "[sources.team]", f'[sources.team]\nmount = "{bao.mount}"'
    )
    r = await start_rig(tmp_path, table, aiohttp_server, aiohttp_client)
    status, body = await r.chat()
    assert status == 503 and str(body["type"]).endswith("/source-unauthorized"), body
    assert "expired or was revoked" in str(body["detail"])
    from vaultd.cli.doctor import run_checks

    checks = await asyncio.to_thread(
        run_checks, str(tmp_path / "config.toml"), None, {"HOME": str(tmp_path)}
    )
    (source,) = [c for c in checks if c.name == "source team"]
    assert source.level == "FAIL"
    assert "expired or was revoked" in source.detail
    assert made["auth"]["client_token"] not in source.detail


def test_a_secret_id_file_open_to_others_stops_the_start(bao: BaoTenant, tmp_path: Path) -> None:
    bao.approle.secret_id_file.chmod(0o644)
    env = DaemonEnv(tmp_path, source_table(bao))
    assert env.vaultd("init").returncode == 0
    proc, log = env.start()
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code != 0
    assert "secret_id_file" in text and "chmod 600" in text
    assert "Traceback" not in text and bao.approle.secret_id not in text
    doctor = env.vaultd("doctor")
    assert "source team" in doctor.stdout and "chmod 600" in doctor.stdout


def test_check_files_refuses_a_group_readable_token_file(tmp_path: Path) -> None:
    from vaultd.sourceconfig import SourceSettings
    from vaultd.sources.auth import check_files

    path = token_file(tmp_path)
    os.chmod(path, 0o640)
    settings = SourceSettings(
        "me", "openbao", "https://b", "secret", "vaultd", "token_file", token_file=path
    )
    with pytest.raises(UnsafePermissions, match="chmod 600"):
        check_files(settings)
