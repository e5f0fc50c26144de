"""``/api/credentials`` through a real socket: the client contract, paging, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from tests.support.http import Mint, bearer, problem
from vaultd.core.vault import Vault
from vaultd.models import now

CONTRACT = {"id", "service", "name", "created_at", "last_used_at"}
SHAPE = CONTRACT | {
    "type",
    "hint",
    "metadata",
    "is_default",
    "updated_at",
    "use_count",
    "limits",
    "source",
    "remote",
    "expires_at",
}


# A valid body, to which each case adds one mistake.
OK = {"service": "openai", "name": "n", "secret": "s"}


def secret(n: int) -> str:
    return f"sk-test-{n:04d}-abcdefghijklmnopqrstuvwxyz"


def store(vault: Vault, service: str, name: str, n: int = 0, **kw: Any) -> str:
    return vault.credentials.add(
        vault.unlock(), service=service, name=name, secret=secret(n), **kw
    ).id


def backdate(vault: Vault, credential_id: str, seconds: int) -> None:
    # Ids made in one millisecond need not sort in creation order, so tests of
    # "oldest first" set creation times apart explicitly.
    with vault.db.conn:
        vault.db.execute(
            "UPDATE credentials SET created_at = created_at - ? WHERE id = ?",
            [seconds, credential_id],
        )


async def test_list_is_the_client_contract(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    newer = store(api_vault, "openai", "a", 1)
    older = store(api_vault, "github", "b", 2)
    backdate(api_vault, older, 60)
    ids = [older, newer]
    response = await api_client.get("/api/credentials", headers=bearer(mint("read")))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    items = await response.json()
    assert [i["id"] for i in items] == ids  # oldest first
    assert all(set(i) == SHAPE for i in items)
    assert items[1]["service"] == "openai" and items[1]["name"] == "a"
    assert items[1]["last_used_at"] is None
    assert isinstance(items[1]["created_at"], int)
    assert items[1]["hint"] == "sk-...wxyz"
    assert "Link" not in response.headers
    assert secret(1) not in await response.text()
    assert secret(2) not in await response.text()


async def test_empty_list(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.get("/api/credentials", headers=bearer(mint("read")))
    assert await response.json() == []


async def test_filters(api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint) -> None:
    backdate(api_vault, store(api_vault, "openai", "a", 1), 10)
    b = store(api_vault, "openai", "b", 2, type="oauth_token")
    store(api_vault, "github", "c", 3)
    headers = bearer(mint("read"))

    async def names(query: str) -> list[str]:
        response = await api_client.get(f"/api/credentials?{query}", headers=headers)
        assert response.status == 200, await response.text()
        return [i["name"] for i in await response.json()]

    assert await names("service=openai") == ["a", "b"]
    assert await names("type=oauth_token") == ["b"]
    assert await names("service=github&type=oauth_token") == []
    assert await names("service=mistral") == []
    assert await names(f"service=openai&starting_after={b}") == []


async def test_paging_follows_link_to_the_end(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    for n in range(7):
        backdate(api_vault, store(api_vault, "openai", f"k{n:02d}", n), 100 - n)
    store(api_vault, "github", "other", 99)
    ids = [c.id for c in api_vault.credentials.list(service="openai")]
    assert [c.name for c in api_vault.credentials.list(service="openai")] == [
        f"k{n:02d}" for n in range(7)
    ]
    headers = bearer(mint("read"))
    seen: list[str] = []
    url: str | None = "/api/credentials?service=openai&limit=3"
    for _ in range(10):  # bounded: 3 pages expected
        if url is None:
            break
        response = await api_client.get(url, headers=headers)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert 1 <= len(page) <= 3
        seen += [i["id"] for i in page]
        link = response.headers.get("Link")
        if link is None:
            url = None
            continue
        target, rel = link.split(";", 1)
        assert rel.strip() == 'rel="next"'
        assert target.startswith("</api/credentials?") and target.endswith(">")
        url = target[1:-1]
        query = URL(url).query
        assert query["service"] == "openai" and query["limit"] == "3"
        assert query["starting_after"] == seen[-1]
    assert url is None
    assert seen == ids


async def test_exact_last_page_has_no_next_link(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    for n in range(4):
        store(api_vault, "openai", f"k{n}", n)
    headers = bearer(mint("read"))
    first = await api_client.get("/api/credentials?limit=2", headers=headers)
    assert "Link" in first.headers
    last_id = (await first.json())[-1]["id"]
    second = await api_client.get(
        f"/api/credentials?limit=2&starting_after={last_id}", headers=headers
    )
    assert len(await second.json()) == 2
    assert "Link" not in second.headers


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ("limit=0", "/limit"),
        ("limit=101", "/limit"),
        ("limit=abc", "/limit"),
        ("limit=-1", "/limit"),
        ("limit=", "/limit"),
        ("limit=1.5", "/limit"),
        ("limit=%EF%BC%91", "/limit"),  # a full-width digit one
        ("limit=99999999999999999999", "/limit"),
        ("limit=1&limit=2", "/limit"),
        ("starting_after=nope", "/starting_after"),
        ("starting_after=", "/starting_after"),
        (f"starting_after={uuid.UUID(int=0)}", "/starting_after"),
        ("starting_after=%27%20OR%201%3D1--", "/starting_after"),
        ("service=Not%20A%20Service", "/service"),
        ("service=%0d%0a", "/service"),
        ("type=%00", "/type"),
        ("color=red", "/color"),
    ],
)
async def test_bad_list_parameters(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint, query: str, pointer: str
) -> None:
    store(api_vault, "openai", "a")
    response = await api_client.get(f"/api/credentials?{query}", headers=bearer(mint("read")))
    body = await problem(response, 422, "validation-error")
    assert pointer in [e["pointer"] for e in body["errors"]]


async def test_get_and_404(api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint) -> None:
    cid = store(api_vault, "openai", "a", 1)
    headers = bearer(mint("read"))
    response = await api_client.get(f"/api/credentials/{cid}", headers=headers)
    assert response.status == 200
    item = await response.json()
    assert set(item) == SHAPE and item["id"] == cid
    for bad in (str(uuid.uuid4()), "nope", "..", "%2e%2e", cid.upper(), cid + "0"):
        missing = await api_client.get(f"/api/credentials/{bad}", headers=headers)
        await problem(missing, 404, "not-found")


async def test_create(api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint) -> None:
    expires = now() + 86400
    response = await api_client.post(
        "/api/credentials",
        json={
            "service": "anthropic",
            "name": "work key",
            "secret": secret(5),
            "type": "api_key",
            "metadata": {"team": "ml"},
            "expires_at": expires,
        },
        headers=bearer(mint("admin")),
    )
    assert response.status == 201, await response.text()
    item = await response.json()
    assert set(item) == SHAPE
    assert response.headers["Location"] == f"/api/credentials/{item['id']}"
    assert (item["service"], item["name"], item["metadata"]) == (
        "anthropic",
        "work key",
        {"team": "ml"},
    )
    assert item["is_default"] is True and item["expires_at"] == expires
    assert secret(5) not in await response.text()
    # Stored sealed, and it opens to what was sent.
    stored = api_vault.credentials.get(item["id"])
    assert api_vault.credentials.reveal(api_vault.unlock(), stored) == secret(5)


async def test_create_defaults(api_client: TestClient[Any, Any], mint: Mint) -> None:
    response = await api_client.post(
        "/api/credentials",
        json={"service": "openai", "name": "n", "secret": "short"},
        headers=bearer(mint("admin")),
    )
    item = await response.json()
    assert (item["type"], item["metadata"], item["expires_at"], item["hint"]) == (
        "api_key",
        {},
        None,
        None,
    )


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({}, ["/service", "/name", "/secret"]),
        ({"service": "openai", "name": "n"}, ["/secret"]),
        ({**OK, "extra": 1}, ["/extra"]),
        ({**OK, "is_default": True}, ["/is_default"]),
        ({"service": "nosuch", "name": "n", "secret": "s"}, ["/service"]),
        ({"service": 1, "name": 2, "secret": 3}, ["/service", "/name", "/secret"]),
        ({"service": "openai", "name": "x" * 256, "secret": "s"}, ["/name"]),
        ({"service": "openai", "name": "", "secret": "s"}, ["/name"]),
        ({"service": "openai", "name": "a\nb", "secret": "s"}, ["/name"]),
        ({"service": "openai", "name": "a\x00b", "secret": "s"}, ["/name"]),
        ({"service": "openai", "name": "a\u202eb", "secret": "s"}, ["/name"]),
        ({"service": "openai", "name": "n", "secret": "s\r\nX-Evil: 1"}, ["/secret"]),
        ({"service": "openai", "name": "n", "secret": " padded "}, ["/secret"]),
        ({"service": "openai", "name": "n", "secret": ""}, ["/secret"]),
        ({"service": "openai", "name": "n", "secret": "x" * 20000}, ["/secret"]),
        # Not the key alone (issue 17): a placeholder, a .env line, quotes.
        ({"service": "openai", "name": "n", "secret": "sk-proj-..."}, ["/secret"]),
        ({"service": "openai", "name": "n", "secret": "OPENAI_API_KEY=sk-a"}, ["/secret"]),
        ({"service": "openai", "name": "n", "secret": '"sk-abc"'}, ["/secret"]),
        ({**OK, "metadata": {f"k{i}": "v" for i in range(60)}}, ["/metadata"]),
        ({**OK, "metadata": {"k": 1}}, ["/metadata/k"]),
        ({**OK, "metadata": {"k" * 41: "v"}}, ["/metadata/" + "k" * 41]),
        ({**OK, "metadata": {"a/b": "v\n"}}, ["/metadata/a~1b"]),
        ({**OK, "metadata": ["a"]}, ["/metadata"]),
        ({**OK, "type": "API KEY"}, ["/type"]),
        ({**OK, "expires_at": "tomorrow"}, ["/expires_at"]),
        ({**OK, "expires_at": 1}, ["/expires_at"]),
        ({**OK, "expires_at": True}, ["/expires_at"]),
        ({**OK, "expires_at": 1e300}, ["/expires_at"]),
    ],
)  # fmt: skip
async def test_create_validation(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    body: dict[str, Any],
    pointers: list[str],
) -> None:
    response = await api_client.post("/api/credentials", json=body, headers=bearer(mint("admin")))
    problem_body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in problem_body["errors"]] == pointers
    assert api_vault.credentials.list() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"service": NaN}',
        b'{"n": Infinity}',
        b"\xff\xfe{}",
        b'{"a": 1}garbage',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": ' + b"9" * 5000 + b"}",
    ],
)
async def test_malformed_json(api_client: TestClient[Any, Any], mint: Mint, raw: bytes) -> None:
    response = await api_client.post(
        "/api/credentials",
        data=raw,
        headers={**bearer(mint("admin")), "Content-Type": "application/json"},
    )
    await problem(response, 400, "malformed-request")


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"null", b"42"])
async def test_body_must_be_an_object(
    api_client: TestClient[Any, Any], mint: Mint, raw: bytes
) -> None:
    response = await api_client.post(
        "/api/credentials",
        data=raw,
        headers={**bearer(mint("admin")), "Content-Type": "application/json"},
    )
    body = await problem(response, 422, "validation-error")
    assert body["errors"] == [{"pointer": "", "message": "the body must be a JSON object"}]


async def test_patch_each_field(
    api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint
) -> None:
    first = store(api_vault, "openai", "first", 1)
    second = store(api_vault, "openai", "second", 2)
    headers = bearer(mint("admin"))

    async def patch(cid: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await api_client.patch(f"/api/credentials/{cid}", json=body, headers=headers)
        assert response.status == 200, await response.text()
        assert secret(1) not in await response.text()
        item: dict[str, Any] = await response.json()
        return item

    assert (await patch(first, {"name": "renamed"}))["name"] == "renamed"
    assert (await patch(first, {"metadata": {"a": "1"}}))["metadata"] == {"a": "1"}
    # Replaced wholesale, not merged.
    assert (await patch(first, {"metadata": {"b": "2"}}))["metadata"] == {"b": "2"}
    expires = now() + 3600
    assert (await patch(first, {"expires_at": expires}))["expires_at"] == expires
    assert (await patch(first, {"expires_at": None}))["expires_at"] is None
    rotated = await patch(first, {"secret": "sk-rotated-abcdefghijklmnop9876"})
    assert rotated["hint"] == "sk-...9876"
    assert api_vault.credentials.reveal(api_vault.unlock(), api_vault.credentials.get(first)) == (
        "sk-rotated-abcdefghijklmnop9876"
    )
    assert (await patch(second, {"is_default": True}))["is_default"] is True
    assert api_vault.credentials.get(first).is_default is False
    assert (await patch(first, {})) ["name"] == "renamed"  # fmt: skip


async def test_patch_errors(api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint) -> None:
    first = store(api_vault, "openai", "first", 1)
    second = store(api_vault, "openai", "second", 2)
    headers = bearer(mint("admin"))
    url = f"/api/credentials/{first}"
    for body, pointer in [
        ({"service": "github"}, "/service"),
        ({"id": second}, "/id"),
        ({"hint": "x"}, "/hint"),
        ({"name": None}, "/name"),
        ({"is_default": "yes"}, "/is_default"),
        ({"metadata": {f"k{i}": "v" for i in range(60)}}, "/metadata"),
    ]:
        response = await api_client.patch(url, json=body, headers=headers)
        problem_body = await problem(response, 422, "validation-error")
        assert [e["pointer"] for e in problem_body["errors"]] == [pointer]
    taken = await api_client.patch(url, json={"name": "second"}, headers=headers)
    conflict = await problem(taken, 409, "conflict")
    assert conflict["conflicting_resource_id"] == second
    missing = await api_client.patch(
        f"/api/credentials/{uuid.uuid4()}", json={"name": "x"}, headers=headers
    )
    await problem(missing, 404, "not-found")
    assert api_vault.credentials.get(first).name == "first"


async def test_delete(api_client: TestClient[Any, Any], api_vault: Vault, mint: Mint) -> None:
    cid = store(api_vault, "openai", "a")
    headers = bearer(mint("admin"))
    response = await api_client.delete(f"/api/credentials/{cid}", headers=headers)
    assert response.status == 204
    assert await response.read() == b""
    assert api_vault.credentials.list() == []
    again = await api_client.delete(f"/api/credentials/{cid}", headers=headers)
    await problem(again, 404, "not-found")
