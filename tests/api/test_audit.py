"""``GET /api/audit``'s filters: service, credential, session, status, refusals, a window.

The page's audit view (DESIGN 15) filters by session, status and time as
well as by service; each filter is the database's, never a page of rows
filtered in the browser, so that a filter over 100,000 rows finds the
matching ones and not only those among the newest hundred.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.audit import DAY1, DAY2, insert_audit, new_ids, sample_rows
from tests.support.http import Mint, bearer, problem
from vaultd.core.vault import Vault

IDS = new_ids()
# sample_rows' times, newest first, as the API lists them.
ALL = [DAY2 + 9, DAY2 + 8, DAY2 + 7, DAY2 + 6, DAY2 + 5, DAY1 + 20, DAY1 + 10]


@pytest.fixture
def sampled(api_vault: Vault) -> Vault:
    insert_audit(api_vault.db, sample_rows(IDS))
    return api_vault


async def times(client: TestClient[Any, Any], token: str, query: str = "") -> list[int]:
    response = await client.get(f"/api/audit{query}", headers=bearer(token))
    assert response.status == 200, await response.text()
    return [row["at"] for row in await response.json()]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ALL),
        ("?service=anthropic", [DAY2 + 5]),
        (f"?credential_id={IDS.openai}", [DAY2 + 9, DAY2 + 8, DAY1 + 20, DAY1 + 10]),
        (f"?session_id={IDS.session_b}", [DAY2 + 6, DAY2 + 5]),
        ("?status=429", [DAY2 + 8]),
        ("?status=4xx", [DAY2 + 9, DAY2 + 8]),
        ("?status=5xx", [DAY2 + 7]),
        ("?status=2xx", [DAY2 + 6, DAY2 + 5, DAY1 + 20, DAY1 + 10]),
        ("?refused=true", [DAY2 + 9, DAY2 + 8]),
        ("?refused=false", [DAY2 + 7, DAY2 + 6, DAY2 + 5, DAY1 + 20, DAY1 + 10]),
        (f"?since={DAY2}", ALL[:5]),
        (f"?until={DAY2}", ALL[5:]),
        (f"?since={DAY1 + 15}&until={DAY2 + 6}", [DAY2 + 5, DAY1 + 20]),
        (f"?session_id={IDS.session_a}&refused=true&status=403", [DAY2 + 9]),
        ("?limit=2", ALL[:2]),
    ],
)
async def test_filters(
    api_client: TestClient[Any, Any], sampled: Vault, mint: Mint, query: str, expected: list[int]
) -> None:
    assert await times(api_client, mint("read"), query) == expected


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ("?session_id=nope", "/session_id"),
        ("?credential_id=nope", "/credential_id"),
        ("?status=42", "/status"),
        ("?status=600", "/status"),
        ("?status=4XX", "/status"),
        ("?status=4x", "/status"),
        ("?refused=yes", "/refused"),
        (f"?since={DAY2}&until={DAY2}", "/until"),
        ("?until=soon", "/until"),
        ("?status=1&status=2", "/status"),
    ],
)
async def test_bad_filters_are_422_naming_the_parameter(
    api_client: TestClient[Any, Any], mint: Mint, query: str, pointer: str
) -> None:
    response = await api_client.get(f"/api/audit{query}", headers=bearer(mint("read")))
    body = await problem(response, 422, "validation-error")
    assert pointer in [e["pointer"] for e in body["errors"]]
