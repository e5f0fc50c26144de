"""``GET /metrics`` (DESIGN 14): the Prometheus text, parsed with prometheus-client's parser.

Fifty real proxied calls against a fake provider (answers, upstream errors,
and refusals: limit-exceeded, unmeterable, policy-denied, an unknown service)
and the series must say what the audit log says; no secret, token or token
prefix anywhere in the text; the scopes as every read endpoint has them.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.http import Mint, bearer, problem
from tests.support.providers import CHAT, Client, ProviderRig, provider_rig
from tests.support.upstream import ANTHROPIC_KEY, OPENAI_KEY, OTHER_KEY
from vaultd import __version__
from vaultd.api.exposition import render
from vaultd.http.appkeys import VAULT
from vaultd.proxy.routes import USAGE
from vaultd.tokens import TOKEN_PREFIX

SEEDED_SECRETS = (
    OPENAI_KEY,
    OTHER_KEY,
    ANTHROPIC_KEY,
    "ghp_GITHUBKEYgithubkey0004",
    "HDRKEYhdrkey0005",
    "alice:s3cret-PASSWORD-0006",
    "QUERYKEYquerykey0007",
    "AIzaGEMINIKEYgeminikey0008",
)


@pytest.fixture
async def rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> ProviderRig:
    return await provider_rig(tmp_path, aiohttp_client, aiohttp_server)


async def scrape(client: TestClient[Any, Any], token: str) -> tuple[ClientResponse, str]:
    response = await client.get("/metrics", headers=bearer(token))
    assert response.status == 200, await response.text()
    return response, await response.text()


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample by its name, as Prometheus would read the text."""
    found: dict[str, list[Sample]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append(sample)
    return found


def single(found: dict[str, list[Sample]], name: str) -> float:
    (sample,) = found[name]
    return sample.value


async def fifty_calls(rig: ProviderRig) -> list[str]:
    """Fifty proxied calls of every kind the audit log records; the tokens they used."""
    plain = rig.mint()
    capped = rig.mint(limits={"max_requests": 3})
    budget = rig.mint(limits={"max_tokens": 1000})
    policed = rig.mint(policy={"allow": ["GET /v1/models"]})
    statuses: Counter[int] = Counter()

    async def done(response: ClientResponse) -> None:
        await response.read()
        statuses[response.status] += 1

    for _ in range(30):
        await done(await rig.chat(plain))
    for _ in range(5):  # 3 answered, 2 limit-exceeded
        await done(await rig.chat(capped))
    for _ in range(3):  # unmeterable: github under a token budget
        await done(await rig.client.get("/proxy/github/user", headers=bearer(budget)))
    for _ in range(3):  # policy-denied
        await done(await rig.chat(policed))
    for _ in range(4):  # the upstream's own 400
        await done(await rig.client.post("/proxy/openai/v1/bad", json={}, headers=bearer(plain)))
    for _ in range(3):
        body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}
        await done(
            await rig.client.post("/proxy/anthropic/v1/messages", json=body, headers=bearer(plain))
        )
    for _ in range(2):  # no such service
        await done(await rig.client.get("/proxy/nosuch/v1/x", headers=bearer(plain)))
    assert sum(statuses.values()) == 50
    assert statuses[200] == 36
    assert statuses[429] == 2
    assert statuses[403] == 6
    return [plain, capped, budget, policed]


async def test_counts_match_the_audit_rows_after_fifty_proxied_calls(rig: ProviderRig) -> None:
    tokens = await fifty_calls(rig)
    rows = await rig.audit()  # flushed: the writer holds nothing back
    assert len(rows) == 50
    _response, text = await scrape(rig.client, rig.mint(scopes=["read"]))
    found = samples(text)

    requests = Counter((r["service"], str(r["status"])) for r in rows)
    assert {
        (s.labels["service"], s.labels["code"]): s.value
        for s in found["vaultd_proxy_requests_total"]
    } == requests
    assert requests[("openai", "200")] == 33
    assert requests[("openai", "429")] == 2

    refused = Counter(
        (r["service"], *r["refusal"].partition(" ")[::2]) for r in rows if r["refusal"] is not None
    )
    assert {
        (s.labels["service"], s.labels["reason"], s.labels["limit"]): s.value
        for s in found["vaultd_proxy_refusals_total"]
    } == refused
    assert refused[("openai", "limit-exceeded", "session.max_requests")] == 2
    assert refused[("github", "unmeterable", "")] == 3
    assert refused[("openai", "policy-denied", "")] == 3

    used: Counter[tuple[str, str]] = Counter()
    cost: defaultdict[str, float] = defaultdict(float)
    for r in rows:
        for kind in ("input", "output", "cached_input"):
            if r[f"{kind}_tokens"]:
                used[(r["service"], kind)] += r[f"{kind}_tokens"]
        if r["cost_usd"] is not None:
            cost[r["service"]] += r["cost_usd"]
    assert {
        (s.labels["service"], s.labels["kind"]): s.value for s in found["vaultd_proxy_tokens_total"]
    } == used
    assert used[("openai", "input")] > 0
    assert used[("anthropic", "output")] > 0
    costs = {s.labels["service"]: s.value for s in found["vaultd_proxy_cost_usd_total"]}
    assert costs == pytest.approx(dict(cost))
    assert costs["openai"] > 0

    # Nothing in flight and nothing waiting to be written after the flush.
    assert single(found, "vaultd_proxy_requests_in_flight") == 0
    assert single(found, "vaultd_usage_writer_pending_rows") == 0
    assert single(found, "vaultd_usage_writer_lag_seconds") == 0
    assert single(found, "vaultd_usage_writer_flush_failures_total") == 0

    # The gauges read from the database.
    credentials = {s.labels["service"]: s.value for s in found["vaultd_credentials"]}
    assert credentials["openai"] == 2
    assert credentials["gemini"] == 1
    assert set(credentials) >= set(rig.config.services)
    # The four tokens above and the read token of the scrape.
    assert single(found, "vaultd_sessions_active") == len(tokens) + 1
    (info,) = found["vaultd_build_info"]
    assert info.labels["version"] == __version__
    assert info.value == 1

    # Never a secret, a token, or the prefix a token is shown by.
    conn = sqlite3.connect(rig.config.db_path)
    try:
        prefixes = [p for (p,) in conn.execute("SELECT key_prefix FROM sessions")]
        ids = [i for (i,) in conn.execute("SELECT id FROM sessions")]
    finally:
        conn.close()
    assert len(prefixes) == len(tokens) + 1
    assert TOKEN_PREFIX not in text
    for forbidden in (*SEEDED_SECRETS, *tokens, *prefixes, *ids):
        assert forbidden not in text


async def test_the_writers_backlog_is_counted_until_it_is_flushed(
    rig: ProviderRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = rig.client.app[USAGE]

    async def held() -> None:
        """The writer's rounds do nothing while the rows are looked at."""

    monkeypatch.setattr(recorder, "flush", held)
    token = rig.mint()
    for _ in range(3):
        response = await rig.chat(token)
        assert response.status == 200
        await response.read()
    read = rig.mint(scopes=["read"])
    found = samples((await scrape(rig.client, read))[1])
    assert single(found, "vaultd_usage_writer_pending_rows") == 3
    assert single(found, "vaultd_usage_writer_lag_seconds") >= 0
    monkeypatch.undo()
    await rig.flush()
    found = samples((await scrape(rig.client, read))[1])
    assert single(found, "vaultd_usage_writer_pending_rows") == 0
    # The totals are counted when recorded, not when written.
    (sample,) = found["vaultd_proxy_requests_total"]
    assert (sample.labels, sample.value) == ({"service": "openai", "code": "200"}, 3)


async def test_in_flight_counts_a_request_while_its_answer_is_on_the_way(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    slow = await provider_rig(tmp_path, aiohttp_client, aiohttp_server, gap=0.5)
    token = slow.mint()
    response = await slow.client.post(
        CHAT, json={"model": "gpt-test", "messages": [], "stream": True}, headers=bearer(token)
    )
    assert response.status == 200
    await response.content.readany()  # the first event: the answer is under way
    found = samples(render(slow.client.app).decode())
    assert single(found, "vaultd_proxy_requests_in_flight") == 1
    await response.read()
    found = samples(render(slow.client.app).decode())
    assert single(found, "vaultd_proxy_requests_in_flight") == 0


async def test_content_type_and_an_empty_daemon(
    api_client: TestClient[Any, Any], mint: Mint
) -> None:
    response, text = await scrape(api_client, mint("read"))
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(text)
    # No proxied call yet: no sample (the library leaves out a family without one).
    assert "vaultd_proxy_requests_total" not in found
    assert single(found, "vaultd_proxy_requests_in_flight") == 0
    assert single(found, "vaultd_sessions_active") == 1
    assert all(s.value == 0 for s in found["vaultd_credentials"])


async def test_needs_a_read_token(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.get("/metrics")
    await problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await problem(
        await api_client.get("/metrics", headers=bearer("fn_sess_" + "x" * 40)),
        401,
        "unauthorized",
    )
    await problem(await api_client.get("/metrics", headers=bearer(mint("proxy"))), 403, "forbidden")
    for scopes in (("read",), ("admin",)):
        await scrape(api_client, mint(*scopes))


async def test_a_revoked_read_token_is_refused(
    api_client: TestClient[Any, Any], mint: Mint
) -> None:
    token = mint("read")
    await scrape(api_client, token)
    vault = api_client.app[VAULT]
    vault.sessions.revoke(vault.sessions.authenticate(token).id)
    await problem(await api_client.get("/metrics", headers=bearer(token)), 401, "unauthorized")


def test_the_daemon_loads_the_metrics_library_only_when_scraped() -> None:
    # prometheus-client costs a daemon's start some 50 ms and a few MiB.
    import subprocess
    import sys

    code = "import sys, vaultd.daemon.app; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
