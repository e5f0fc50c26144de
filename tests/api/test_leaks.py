"""No response, log line or exception text carries a secret or a full token (T4, T5).

One run drives every endpoint, successes and failures alike, with secrets and
tokens placed wherever a client could put them (values, paths, queries,
headers), then searches everything that came back and everything logged.
(A client's own JSON field names are echoed in 422 pointers: that is the
client's text, returned to that client, and only token-shaped text is cut.)
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.http import Mint, bearer
from vaultd.core.vault import Vault

SECRET = "sk-leaktest-SECRET-0123456789abcdefXYZ"
ROTATED = "sk-leaktest-ROTATED-9876543210fedcbaQRS"


async def test_nothing_leaks(
    api_client: TestClient[Any, Any],
    api_vault: Vault,
    mint: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = mint("admin")
    reader = mint("read")
    revoked = mint("read")
    api_vault.sessions.revoke(api_vault.sessions.authenticate(revoked).id)
    tokens = [admin, reader, revoked]
    seen: list[str] = []
    minted: list[str] = []
    json_headers = {**bearer(admin), "Content-Type": "application/json"}

    async def call(method: str, path: str, **kw: Any) -> Any:
        response = await api_client.request(method, path, **kw)
        text = await response.text()
        seen.append(text)
        seen.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        return response

    with caplog.at_level(logging.DEBUG):
        created = await call(
            "POST",
            "/api/credentials",
            json={"service": "openai", "name": "k", "secret": SECRET, "metadata": {"m": "v"}},
            headers=bearer(admin),
        )
        cid = (await created.json())["id"]
        # Secrets in every field a mistake could echo.
        for body in (
            {"service": "openai", "name": "k", "secret": SECRET},  # 409
            {"service": SECRET, "name": SECRET + "\n", "secret": SECRET + "\n"},
            {"service": "openai", "name": "x", "secret": SECRET, "colour": SECRET},
            {"service": "openai", "name": "y", "secret": SECRET, "metadata": {"k": SECRET * 20}},
            {"service": "openai", "name": "z", "secret": [SECRET], "type": SECRET},
        ):
            await call("POST", "/api/credentials", json=body, headers=bearer(admin))
        await call(
            "POST", "/api/credentials", data=b'{"secret": "' + SECRET.encode(), headers=json_headers
        )
        await call(
            "PATCH", f"/api/credentials/{cid}", json={"secret": ROTATED}, headers=bearer(admin)
        )
        await call(
            "PATCH",
            f"/api/credentials/{cid}",
            json={"secret": SECRET + "\r\n"},
            headers=bearer(admin),
        )
        await call("GET", "/api/credentials", headers=bearer(reader))
        await call("GET", f"/api/credentials/{cid}", headers=bearer(reader))
        await call("GET", "/api/services", headers=bearer(reader))
        await call("GET", "/api/sessions", headers=bearer(reader))
        # Tokens where they do not belong.
        for token in tokens:
            await call("GET", f"/api/credentials/{token}", headers=bearer(reader))
            await call("GET", f"/api/credentials?starting_after={token}", headers=bearer(reader))
            await call("GET", f"/api/credentials?{token}=1", headers=bearer(reader))
            await call("DELETE", f"/api/sessions/{token}", headers=bearer(admin))
            await call("DELETE", f"/api/sessions/{token}", headers=bearer(reader))
            await call("GET", f"/nowhere/{token}")
            await call("GET", "/api/sessions", headers=bearer(token + "x"))
            await call("GET", "/api/sessions", headers={"Authorization": token})
            await call("POST", "/api/sessions", json={"name": token}, headers=bearer(reader))
            await call("POST", "/api/sessions", json={token: 1}, headers=bearer(admin))
        await call("GET", "/api/sessions", headers=bearer(revoked))
        response = await call("POST", "/api/sessions", json={"name": "new"}, headers=bearer(admin))
        minted.append((await response.json())["token"])

    assert api_vault.credentials.reveal(api_vault.unlock(), api_vault.credentials.get(cid)) == (
        ROTATED
    )
    # The one place a token may appear: the creation response, and only its own.
    creation_response = seen[-2]
    seen = seen[:-2]
    assert minted[0] in creation_response
    assert not [t for t in tokens if t in creation_response]

    logged = caplog.text + "\n".join(
        str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]
    )
    assert caplog.records, "expected the requests to be logged"
    for needle in (SECRET, ROTATED, *tokens, *minted):
        for i, text in enumerate(seen):
            assert needle not in text, (needle[:12], i, text[:300])
        assert needle not in logged, needle[:12]
    # Not even long fragments of a secret (the hint's 3 + 4 characters are allowed).
    for value in (SECRET, ROTATED):
        for start in range(len(value) - 8):
            fragment = value[start : start + 8]
            assert not [t for t in seen if fragment in t], fragment
