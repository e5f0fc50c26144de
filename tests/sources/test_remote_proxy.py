"""Team keys from a real OpenBao server, injected by vaultd's proxy (DESIGN 13).

Each test runs the daemon's app in process (its rounds, its proxy) against a
real ``bao server`` on 127.0.0.1 and a fake upstream; the server's file
audit device counts what vaultd asked of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.proxy.test_sdks import Seen, fake_apis
from tests.sources.baoserver import BaoTenant
from tests.support.cli import file_bytes_under
from tests.support.config import write_proxy_config
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE

KEY = "sk-proj-TEAMKEYteamkey0000000001"
ROTATED = "sk-proj-TEAMKEYrotated000000002"
PATH = "vaultd/openai/team"

MakeServer = Callable[..., Awaitable[TestServer]]
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def source_table(bao: BaoTenant, *, refresh: str = "1s", max_stale: str = "1h") -> str:
    approle = bao.approle
    return f"""
[sources.team]
url = "{bao.url}"
mount = "{bao.mount}"
prefix = "{bao.prefix}"
auth = "approle"
role_id = "{approle.role_id}"
secret_id_file = "{approle.secret_id_file}"
refresh_interval = "{refresh}"
max_stale = "{max_stale}"
"""


@dataclass
class Rig:
    config: Config
    client: TestClient[web.Request, web.Application]
    seen: Seen
    token: str

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def chat(self) -> tuple[int, dict[str, object]]:
        """One proxied chat completion: the status and the JSON answer."""
        resp = await self.client.post(
            "/proxy/openai/v1/chat/completions",
            headers=self.auth(),
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        )
        body = await resp.json()
        return resp.status, body

    async def listing(self) -> list[dict[str, object]]:
        resp = await self.client.get("/api/credentials", headers=self.auth())
        assert resp.status == 200
        items: list[dict[str, object]] = await resp.json()
        return items

    def sent_keys(self) -> list[str]:
        return [h.get("Authorization", "") for h in self.seen]


async def until(check: Callable[[], Awaitable[bool]], seconds: float, step: float = 0.1) -> float:
    """Poll ``check`` until it holds (at most ``seconds``): how long it took."""
    started = time.monotonic()
    for _ in range(int(seconds / step) + 1):
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(step)
    pytest.fail(f"not within {seconds}s")


@pytest.fixture
def rig(
    tmp_path: Path, aiohttp_server: MakeServer, aiohttp_client: MakeClient
) -> Callable[..., Awaitable[Rig]]:
    async def make(bao: BaoTenant, **table: str) -> Rig:
        seen: Seen = []
        upstream = await aiohttp_server(fake_apis(seen), host="127.0.0.1", access_log=None)
        config = write_proxy_config(
            tmp_path / "config.toml",
            f"http://127.0.0.1:{upstream.port}",
            source_table(bao, **table),
        )
        init_vault(config)[0].close()
        client = await aiohttp_client(create_app(config), server_kwargs={"host": "127.0.0.1"})
        _session, token = client.app[VAULT].sessions.create(
            name="remote",
            scopes=["proxy", "read", "admin"],
            services=["*"],
            ttl=600,
            known_services=config.services,
        )
        return Rig(config, client, seen, token)

    return make


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
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        return reply.choices[0].message.content or ""

    assert await asyncio.to_thread(call) == "hello from upstream"
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
