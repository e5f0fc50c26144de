"""A remote credential's life: renewal of vaultd's token, deletion, rate limits, the
listing's filters and pages, ``vaultd doctor``, and the CLI against a real daemon."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support.daemon import DaemonEnv, stop
from tests.support.openbao import BaoTenant
from tests.support.sources import KEY, PATH, Rig, source_table, until
from vaultd.http.appkeys import VAULT


async def test_the_token_is_renewed_before_it_expires_and_a_login_follows_max_ttl(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.approle = bao.new_approle(token_ttl="2s", token_max_ttl="5s")
    bao.kv_put(PATH, secret=KEY)
    mark = bao.audit.mark()
    r = await rig(bao, refresh="1s")
    assert (await r.chat())[0] == 200
    # Past the first token's max_ttl: served all along.
    for _ in range(7):
        await asyncio.sleep(1.0)
        assert (await r.chat())[0] == 200
    counts = bao.audit.counts(since=mark)
    assert counts[("update", "auth/token/renew-self")] >= 1
    assert counts[("update", "auth/approle/login")] >= 2


async def test_a_deleted_secret_is_503_credential_deleted(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s")
    assert (await r.chat())[0] == 200
    bao.kv_delete(PATH)

    async def deleted() -> bool:
        status, body = await r.chat()
        return status == 503 and str(body["type"]).endswith("/credential-deleted")

    await until(deleted, 5.0)
    sent = len(r.seen)
    bao.kv_metadata_delete(PATH)  # gone from the listing too: still "deleted", not "never was"
    await asyncio.sleep(1.5)
    assert (await r.chat())[0] == 503
    assert len(r.seen) == sent
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    assert item["remote"]["status"] == "deleted"  # type: ignore[index]


async def test_a_rate_limited_source_serves_the_last_good_value(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s", max_stale="1h")
    assert (await r.chat())[0] == 200
    quota = bao.rate_limit(0.1, "10s")
    try:
        await asyncio.sleep(2.5)
        for _ in range(5):
            assert (await r.chat())[0] == 200
        assert r.sent_keys()[-1] == f"Bearer {KEY}"
    finally:
        bao.clear_rate_limit(quota)


async def test_the_listing_filters_by_source_and_pages_across_both(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    for name in ("a", "b", "c"):
        bao.kv_put(f"vaultd/openai/{name}", secret=f"{KEY[:-1]}{name}")
    r = await rig(bao, refresh="5m")
    vault = r.client.app[VAULT]
    local = vault.credentials.add(
        vault.unlock(), service="openai", name="mine", secret="sk-proj-LOCALlocalLOCAL0000001"
    )
    # The vault has a default now, so no request waits for the first listing.
    await r.listed()

    async def get(query: str) -> tuple[list[dict[str, object]], str | None]:
        resp = await r.client.get(f"/api/credentials{query}", headers=r.auth())
        assert resp.status == 200, await resp.text()
        return await resp.json(), resp.headers.get("Link")

    everything, _ = await get("")
    assert [(i["source"], i["name"]) for i in everything] == [
        ("local", "mine"),
        ("team", "a"),
        ("team", "b"),
        ("team", "c"),
    ]
    # The vault's default is the proxy's default: no remote one is marked.
    assert [i["is_default"] for i in everything] == [True, False, False, False]
    assert [i["name"] for i in (await get("?source=team"))[0]] == ["a", "b", "c"]
    assert [i["id"] for i in (await get("?source=local"))[0]] == [local.id]
    assert (await get("?source=other"))[0] == []
    seen: list[object] = []
    query: str | None = "?limit=2"
    for _ in range(5):
        assert query is not None
        page, link = await get(query)
        seen += [i["name"] for i in page]
        if link is None:
            break
        query = "?" + link.split("?", 1)[1].split(">", 1)[0]
    assert seen == ["mine", "a", "b", "c"]
    resp = await r.client.get("/api/credentials?source=bad%20name", headers=r.auth())
    assert resp.status == 422


def _serve(bao: BaoTenant, tmp_path: Path) -> tuple[DaemonEnv, subprocess.Popen[bytes], Path]:
    upstream = "http://127.0.0.1:9"
    env = DaemonEnv(
        tmp_path, f'[services.echo]\nbase_url = "{upstream}"\n' + source_table(bao, refresh="1s")
    )
    assert env.vaultd("init").returncode == 0
    proc, log = env.start()
    env.wait_healthy(proc, log)
    return env, proc, log


async def test_the_cli_lists_remote_credentials_with_a_source_column_and_refuses_writes(
    bao: BaoTenant, tmp_path: Path
) -> None:
    bao.kv_put(PATH, secret=KEY)
    env, proc, log = _serve(bao, tmp_path)
    try:

        async def listed() -> bool:
            out = env.vaultd("list", "--json")
            return out.returncode == 0 and any(
                i["source"] == "team" for i in json.loads(out.stdout)
            )

        await until(listed, 10.0)
        table = env.vaultd("list")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert "SOURCE" in header.split()
        assert any(" team " in f" {row} " and "sk-...0001" in row for row in rows)
        shown = env.vaultd("show", "openai/team", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["remote"]["path"] == PATH
        for verb in (("rm", "openai/team", "--yes"), ("rotate", "openai/team")):
            refused = env.vaultd(*verb)
            assert refused.returncode == 1
            assert "held by source team" in refused.stderr and "Traceback" not in refused.stderr
        added = env.vaultd("add", "openai", "team")
        assert added.returncode == 1 and "held by source team" in added.stderr
        doctor = env.vaultd("doctor")
        line = next(x for x in doctor.stdout.splitlines() if "source team" in x)
        assert line.startswith("ok") and "1 credential " in line and "token valid" in line
        # A local key of the same name hides the team's: doctor says so.
        local_key = "sk-proj-LOCALlocalLOCAL0000009\n"
        hidden = env.vaultd("add", "openai", "team", input=local_key)
        assert hidden.returncode == 1  # refused while the daemon knows the name ...
        stop(proc)
        added = env.vaultd("add", "openai", "team", input=local_key)
        assert added.returncode == 0, added.stderr  # ... not once it is down
        proc, log2 = env.start("daemon2")
        env.wait_healthy(proc, log2)
        warned = env.vaultd("doctor").stdout
        assert "warn source team: the vault's own openai/team hides" in warned
    finally:
        stop(proc)
    text = log.read_text() + doctor.stdout + doctor.stderr
    assert KEY not in text and bao.approle.secret_id not in text
    # Down: the local part is listed all the same, and one line says why the rest is not.
    down = env.vaultd("list")
    assert down.returncode == 0
    assert "[sources.team] are not shown" in down.stderr
