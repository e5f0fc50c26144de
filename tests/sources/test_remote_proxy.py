"""Team keys from a real OpenBao server, injected by vaultd's proxy (DESIGN 13).

Each test runs the daemon's app in process (its rounds, its proxy) against a
real ``bao server`` on 127.0.0.1 and a fake upstream; the server's file
audit device counts what vaultd asked of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import pytest

from tests.support.cli import file_bytes_under
from tests.support.openbao import BaoTenant
from tests.support.providers import WORDS
from tests.support.sources import KEY, PATH, ROTATED, Rig, source_table, until
from vaultd.proxy.routes import USAGE


def _no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in text


async def test_a_team_key_is_listed_and_injected_into_the_openai_sdk(
    bao: BaoTenant,
    rig: Callable[..., Awaitable[Rig]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bao.kv_put(PATH, secret=KEY)
    bao.kv_metadata_put(PATH, {"team": "ml", "max_requests_per_day": "100"})
    r = await rig(bao)
    sdk = openai.OpenAI(base_url=f"{r.url}/proxy/openai/v1", api_key=r.token, max_retries=0)

    def call() -> str:
        reply = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        return reply.choices[0].message.content or ""

    assert await asyncio.to_thread(call) == "".join(WORDS)
    assert r.sent_keys() == [f"Bearer {KEY}"]
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    # The seed-003 fields, plus where it comes from.
    for field in ("id", "service", "name", "created_at", "last_used_at", "hint", "is_default"):
        assert field in item
    assert item["name"] == "team" and item["source"] == "team" and item["is_default"] is True
    assert item["metadata"] == {"team": "ml"}
    assert item["limits"] == {"max_requests_per_day": 100}
    remote = item["remote"]
    assert isinstance(remote, dict)
    assert remote["path"] == PATH and remote["version"] == 1 and remote["status"] == "ok"
    assert item["hint"] == "sk-...0001"
    # Its use is local: written by the usage writer, shown in the listing.
    await r.client.app[USAGE].flush()
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    assert item["use_count"] == 1 and item["last_used_at"] is not None
    # Not a byte of it on disk, under any of the vault's directories.
    for path, data in file_bytes_under(tmp_path).items():
        assert KEY.encode() not in data, path
        assert bao.approle.secret_id.encode() not in data or path == bao.approle.secret_id_file
    _no_secret_logged(caplog, KEY, r.token)


async def test_writes_to_a_remote_credential_are_409(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao)
    await r.chat()
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    target = f"/api/credentials/{item['id']}"
    for method, body in (
        ("PATCH", {"name": "mine"}),
        ("PATCH", {"secret": "sk-proj-OVERWRITTEN00000000000"}),
        ("DELETE", None),
    ):
        resp = await r.client.request(method, target, headers=r.auth(), json=body)
        assert resp.status == 409
        assert (await resp.json())["type"].endswith("/read-only-source")
    resp = await r.client.post(
        "/api/credentials",
        headers=r.auth(),
        json={"service": "openai", "name": "team", "secret": "sk-proj-LOCALCOPY000000000000"},
    )
    assert resp.status == 409
    resp = await r.client.get(target, headers=r.auth())
    assert resp.status == 200 and (await resp.json())["source"] == "team"
    assert r.sent_keys() == [f"Bearer {KEY}"]


async def test_a_new_version_is_sent_within_refresh_interval(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s")
    assert (await r.chat())[0] == 200
    bao.kv_put(PATH, secret=ROTATED)

    async def rotated() -> bool:
        status, _ = await r.chat()
        return status == 200 and r.sent_keys()[-1] == f"Bearer {ROTATED}"

    took = await until(rotated, 5.0)
    assert took < 1.0 + 1.0  # refresh_interval, and a round trip's margin
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    assert item["remote"]["version"] == 2  # type: ignore[index]


@pytest.mark.parametrize("how", ["token-and-secret-id", "policy"])
async def test_revocation_drops_the_key_and_nothing_more_goes_upstream(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]], how: str
) -> None:
    bao.kv_put(PATH, secret=KEY)
    r = await rig(bao, refresh="1s")
    assert (await r.chat())[0] == 200
    if how == "policy":
        bao.remove_policy()
    else:
        bao.destroy_secret_id()
        assert bao.revoke_approle_tokens() >= 1

    async def refused() -> bool:
        status, body = await r.chat()
        return status == 503 and str(body["type"]).endswith("/source-unauthorized")

    await until(refused, 5.0)
    sent = len(r.seen)
    for _ in range(3):
        status, _ = await r.chat()
        assert status == 503
    assert len(r.seen) == sent
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    assert item["remote"]["status"] == "unauthorized"  # type: ignore[index]
    assert item["hint"] is None


async def test_fifty_concurrent_first_requests_cost_one_read(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    mark = bao.audit.mark()
    r = await rig(bao, refresh="5m")
    results = await asyncio.gather(*(r.chat() for _ in range(50)))
    assert [status for status, _ in results] == [200] * 50
    assert r.sent_keys() == [f"Bearer {KEY}"] * 50
    assert bao.reads(PATH, since=mark) == 1


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("sk-" + "a" * (3 * 1024 * 1024), "larger than"),
        ("sk-proj-abc\r\nX-Injected: 1-0000000000", "control characters"),
    ],
    ids=["3MB", "control-characters"],
)
async def test_an_unusable_secret_is_a_503_never_a_500(
    bao: BaoTenant,
    rig: Callable[..., Awaitable[Rig]],
    caplog: pytest.LogCaptureFixture,
    secret: str,
    why: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    bao.kv_put(PATH, secret=secret)
    r = await rig(bao)
    status, body = await r.chat()
    assert status == 503, body
    assert str(body["type"]).endswith("/source-secret-invalid")
    assert why in str(body["detail"])
    assert r.seen == []
    (item,) = [i for i in await r.listing() if i["service"] == "openai"]
    assert item["remote"]["status"] == "invalid"  # type: ignore[index]
    _no_secret_logged(caplog, secret[:64], secret.split("\r")[0])


async def test_a_refused_prefix_never_reaches_the_server(bao: BaoTenant, tmp_path: Path) -> None:
    mark = bao.audit.mark()
    text = source_table(bao).replace('prefix = "vaultd"', 'prefix = "vaultd/%2e%2e/sys"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    from vaultd.config import load_config
    from vaultd.errors import ConfigError

    with pytest.raises(ConfigError, match="prefix"):
        load_config(str(path), str(tmp_path / "data"))
    await asyncio.sleep(0.2)
    assert bao.audit.paths(since=mark) == []


async def test_a_daily_limit_set_at_the_source_is_enforced_here(
    bao: BaoTenant, rig: Callable[..., Awaitable[Rig]]
) -> None:
    bao.kv_put(PATH, secret=KEY)
    bao.kv_metadata_put(PATH, {"max_requests_per_day": "2"})
    r = await rig(bao)
    assert [(await r.chat())[0] for _ in range(2)] == [200, 200]
    status, body = await r.chat()
    assert status == 429 and body["limit"] == "credential.max_requests_per_day"
    assert len(r.seen) == 2
