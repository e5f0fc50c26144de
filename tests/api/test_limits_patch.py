"""``PATCH /api/sessions/{id}`` and ``PATCH /api/credentials/{id}`` with ``limits`` (DESIGN 10).

Limits are replaced wholesale; null or ``{}`` clears them; every bad value is
a 422 naming the limit, and nothing is written; only admin may change them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.http import Mint, bearer, problem
from vaultd.core.vault import Vault


@dataclass
class Target:
    """A session or a credential to PATCH, and how to read its limits back from the store."""

    url: str
    kind: str
    # A session's own token (it has the read and proxy scopes, not admin).
    token: str = ""

    def stored(self, vault: Vault) -> Any:
        record_id = self.url.rsplit("/", 1)[-1]
        if self.kind == "session":
            return vault.sessions.get(record_id).limits
        return vault.credentials.get(record_id).limits


@pytest.fixture
def session(api_vault: Vault, mint: Mint) -> Target:
    token = mint("read", "proxy")
    return Target(f"/api/sessions/{api_vault.sessions.authenticate(token).id}", "session", token)


@pytest.fixture
def credential(api_vault: Vault) -> Target:
    added = api_vault.credentials.add(
        api_vault.unlock(), service="openai", name="k", secret="sk-test-abcdefghijklmnop0001"
    )
    return Target(f"/api/credentials/{added.id}", "credential")


async def patch(
    client: TestClient[Any, Any], target: Target, token: str, body: object
) -> tuple[int, dict[str, Any]]:
    response = await client.patch(target.url, json=body, headers=bearer(token))
    data: dict[str, Any] = json.loads(await response.text())
    return response.status, data


# -- sessions ----------------------------------------------------------------------


async def test_session_limits_set_replace_and_clear(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint, session: Target
) -> None:
    admin = mint("admin")
    every = {"max_requests": 500, "max_tokens": 2_000_000, "max_cost_usd": 5, "rpm": 60}
    status, body = await patch(api_client, session, admin, {"limits": {**every, "concurrency": 4}})
    assert status == 200, body
    assert body["limits"] == {**every, "max_cost_usd": 5.0, "concurrency": 4}
    assert body["used"] == {"requests": 0, "tokens": 0, "cost_usd": 0}
    assert session.stored(api_vault) == body["limits"]
    # Listed as set.
    listed = await (await api_client.get("/api/sessions", headers=bearer(admin))).json()
    assert next(s for s in listed if session.url.endswith(s["id"]))["limits"] == body["limits"]
    # Replaced wholesale, not merged; a null value leaves that limit out.
    status, body = await patch(
        api_client, session, admin, {"limits": {"rpm": 5, "max_tokens": None}}
    )
    assert (status, body["limits"]) == (200, {"rpm": 5})
    # A body without limits changes nothing.
    status, body = await patch(api_client, session, admin, {})
    assert (status, body["limits"]) == (200, {"rpm": 5})
    cleared: dict[str, int] | None
    for cleared in (None, {}):
        await patch(api_client, session, admin, {"limits": {"rpm": 5}})
        status, body = await patch(api_client, session, admin, {"limits": cleared})
        assert (status, body["limits"]) == (200, None)
        assert session.stored(api_vault) is None


SESSION_BAD = [
    ({"max_requests": -1}, "/limits/max_requests"),
    ({"max_requests": 0}, "/limits/max_requests"),
    ({"max_requests": "5"}, "/limits/max_requests"),
    ({"max_requests": True}, "/limits/max_requests"),
    ({"max_requests": 2**63}, "/limits/max_requests"),
    ({"max_tokens": 2.5}, "/limits/max_tokens"),
    ({"rpm": 5.0}, "/limits/rpm"),
    ({"concurrency": [1]}, "/limits/concurrency"),
    ({"max_cost_usd": -0.01}, "/limits/max_cost_usd"),
    ({"max_cost_usd": 0}, "/limits/max_cost_usd"),
    ({"max_cost_usd": "5"}, "/limits/max_cost_usd"),
    ({"max_cost_usd": 1e300}, "/limits/max_cost_usd"),
    ({"requests": 5}, "/limits/requests"),
    ({"max_requests_per_day": 5}, "/limits/max_requests_per_day"),  # a credential's
    ({"a/b": 1}, "/limits/a~1b"),
    ([], "/limits"),
    ("rpm=5", "/limits"),
    (5, "/limits"),
]


@pytest.mark.parametrize(("limits", "pointer"), SESSION_BAD)
async def test_bad_session_limits_are_422_and_change_nothing(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    session: Target,
    limits: object,
    pointer: str,
) -> None:
    admin = mint("admin")
    assert (await patch(api_client, session, admin, {"limits": {"rpm": 7}}))[0] == 200
    response = await api_client.patch(session.url, json={"limits": limits}, headers=bearer(admin))
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert session.stored(api_vault) == {"rpm": 7}


async def test_every_bad_limit_is_named_at_once(
    api_client: TestClient[Any, Any], mint: Mint, session: Target
) -> None:
    limits = {"max_requests": 0, "rpm": "x", "nope": 1, "concurrency": 2}
    response = await api_client.patch(
        session.url, json={"limits": limits}, headers=bearer(mint("admin"))
    )
    body = await problem(response, 422, "validation-error")
    pointers = {e["pointer"] for e in body["errors"]}
    assert pointers == {"/limits/max_requests", "/limits/rpm", "/limits/nope"}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [({"name": "renamed"}, "/name"), ({"status": "active"}, "/status"), ({"used": None}, "/used")],
)
async def test_session_patch_takes_only_limits_and_policy(
    api_client: TestClient[Any, Any], mint: Mint, session: Target, body: object, pointer: str
) -> None:
    response = await api_client.patch(session.url, json=body, headers=bearer(mint("admin")))
    problem_body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in problem_body["errors"]] == [pointer]


async def test_session_patch_of_a_malformed_body_is_400(
    api_client: TestClient[Any, Any], mint: Mint, session: Target
) -> None:
    response = await api_client.patch(
        session.url,
        data=b'{"limits": {"max_cost_usd": Infinity}}',
        headers={**bearer(mint("admin")), "Content-Type": "application/json"},
    )
    await problem(response, 400, "malformed-request")


# -- both: unknown ids, scopes -------------------------------------------------------


@pytest.mark.parametrize("kind", ["sessions", "credentials"])
@pytest.mark.parametrize("record_id", ["0940da16-f5d6-48cd-a530-9db18a66e558", "nope", "0" * 36])
async def test_unknown_id_is_404(
    api_client: TestClient[Any, Any], mint: Mint, kind: str, record_id: str
) -> None:
    response = await api_client.patch(
        f"/api/{kind}/{record_id}", json={"limits": None}, headers=bearer(mint("admin"))
    )
    await problem(response, 404, "not-found")


@pytest.mark.parametrize("kind", ["session", "credential"])
async def test_only_admin_may_change_limits(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    session: Target,
    credential: Target,
    kind: str,
) -> None:
    target = session if kind == "session" else credential
    limits = {"rpm": 1} if kind == "session" else {"max_requests_per_day": 1}
    response = await api_client.patch(target.url, json={"limits": limits})
    await problem(response, 401, "unauthorized")
    for scopes in (("read",), ("proxy",), ("read", "proxy")):
        response = await api_client.patch(
            target.url, json={"limits": limits}, headers=bearer(mint(*scopes))
        )
        await problem(response, 403, "forbidden")
    # Nor may a session lift its own limits (it may revoke itself, not this).
    if target.token:
        response = await api_client.patch(
            target.url, json={"limits": limits}, headers=bearer(target.token)
        )
        await problem(response, 403, "forbidden")
    assert target.stored(api_vault) is None


# -- credentials ---------------------------------------------------------------------


async def test_credential_limits_set_replace_and_clear(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint, credential: Target
) -> None:
    admin = mint("admin")
    daily = {"max_requests_per_day": 1000, "max_tokens_per_day": 10**6, "max_cost_usd_per_day": 2.5}
    status, body = await patch(api_client, credential, admin, {"limits": daily})
    assert (status, body["limits"]) == (200, daily)
    assert credential.stored(api_vault) == daily
    got = await api_client.get(credential.url, headers=bearer(admin))
    assert (await got.json())["limits"] == daily
    # Wholesale, and beside other fields in one PATCH.
    status, body = await patch(
        api_client, credential, admin, {"limits": {"max_tokens_per_day": 5}, "name": "renamed"}
    )
    assert (status, body["limits"], body["name"]) == (200, {"max_tokens_per_day": 5}, "renamed")
    cleared: dict[str, int] | None
    for cleared in (None, {}):
        status, body = await patch(api_client, credential, admin, {"limits": cleared})
        assert (status, body["limits"]) == (200, None)
    assert credential.stored(api_vault) is None


@pytest.mark.parametrize(
    ("limits", "pointer"),
    [
        ({"max_requests_per_day": -3}, "/limits/max_requests_per_day"),
        ({"max_requests_per_day": 0}, "/limits/max_requests_per_day"),
        ({"max_requests_per_day": "10"}, "/limits/max_requests_per_day"),
        ({"max_requests_per_day": 2**63}, "/limits/max_requests_per_day"),
        ({"max_tokens_per_day": 1.5}, "/limits/max_tokens_per_day"),
        ({"max_tokens_per_day": False}, "/limits/max_tokens_per_day"),
        ({"max_cost_usd_per_day": 0}, "/limits/max_cost_usd_per_day"),
        ({"max_cost_usd_per_day": -1}, "/limits/max_cost_usd_per_day"),
        ({"max_cost_usd_per_day": {}}, "/limits/max_cost_usd_per_day"),
        ({"max_requests": 5}, "/limits/max_requests"),  # a session's
        ({"per_day": 5}, "/limits/per_day"),
        ([{"max_requests_per_day": 5}], "/limits"),
        ("none", "/limits"),
    ],
)
async def test_bad_credential_limits_are_422_and_change_nothing(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    credential: Target,
    limits: object,
    pointer: str,
) -> None:
    admin = mint("admin")
    kept = {"max_requests_per_day": 9}
    assert (await patch(api_client, credential, admin, {"limits": kept}))[0] == 200
    # With a good field beside it: nothing is written, the name neither.
    response = await api_client.patch(
        credential.url, json={"limits": limits, "name": "changed"}, headers=bearer(admin)
    )
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert credential.stored(api_vault) == kept
    assert api_vault.credentials.get(credential.url.rsplit("/", 1)[-1]).name == "k"
