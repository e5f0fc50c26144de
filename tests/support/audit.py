"""Audit rows for tests, written with the store's own insert statements (``insert_batches``).

``sample_rows`` is one small log that every usage test reads: two days of
metered calls, an unmetered one, rows with no session, credential or model,
and refused rows that must not count (one with made-up usage, to show that
a refusal is left out whatever it carries).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

from sqlite_utils import Database

from vaultd.store.audit import AuditEntry, AuditRow, insert_batches

# 2026-01-01T00:00:00Z and the next day.
DAY1 = 1_767_225_600
DAY2 = DAY1 + 86_400


def audit_row(
    at: int,
    *,
    session_id: str | None = None,
    credential_id: str | None = None,
    service: str = "openai",
    status: int = 200,
    model: str | None = None,
    tokens: tuple[int, int, int | None] | None = None,
    cost_usd: float | None = None,
    refusal: str | None = None,
    path: str = "/v1/chat/completions",
) -> AuditRow:
    """A row as the proxy records one; ``tokens`` = (input, output, cached), None = unmetered."""
    input_tokens, output_tokens, cached = tokens if tokens is not None else (None, None, None)
    return AuditEntry(
        at=at,
        request_id=f"req-{at}-{model}-{refusal}",
        session_id=session_id,
        credential_id=credential_id,
        service=service,
        method="POST",
        path=path,
        status=status,
        duration_ms=12.5,
        bytes_in=100,
        bytes_out=200,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cost_usd=cost_usd,
        refusal=refusal,
        usage_partial=None if tokens is None else 0,
    )[:-1]


def insert_audit(db: Database, rows: Sequence[AuditRow]) -> None:
    with db.conn:
        for sql, params in insert_batches(list(rows)):
            db.conn.execute(sql, params)


class Ids(NamedTuple):
    """Who the sample rows name: two sessions, and credentials of three services."""

    session_a: str
    session_b: str
    openai: str
    anthropic: str
    github: str


def new_ids() -> Ids:
    """Ids for the sample rows where no real session or credential is needed.

    Fixed (made from the field names): test ids built from them must be the
    same in every pytest-xdist worker, or the workers' collections differ.
    """
    return Ids(
        *(str(uuid.uuid5(uuid.NAMESPACE_URL, f"vaultd-test:{name}")) for name in Ids._fields)
    )


def sample_rows(ids: Ids) -> list[AuditRow]:
    return [
        audit_row(
            DAY1 + 10,
            session_id=ids.session_a,
            credential_id=ids.openai,
            model="gpt-4o",
            tokens=(1000, 200, 100),
            cost_usd=0.0015,
        ),
        audit_row(
            DAY1 + 20,
            session_id=ids.session_a,
            credential_id=ids.openai,
            model="gpt-4o",
            tokens=(3000, 400, 0),
            cost_usd=0.0035,
        ),
        audit_row(
            DAY2 + 5,
            session_id=ids.session_b,
            credential_id=ids.anthropic,
            service="anthropic",
            model="claude-sonnet-4-5",
            tokens=(500, 50, None),
            cost_usd=0.002,
        ),
        # Unmetered: a service with usage = "none".
        audit_row(DAY2 + 6, session_id=ids.session_b, credential_id=ids.github, service="github"),
        # Went upstream with no session or credential on the row (unreachable, say).
        audit_row(DAY2 + 7, status=502),
        # Refused: not counted, whatever the row carries.
        audit_row(
            DAY2 + 8,
            session_id=ids.session_a,
            credential_id=ids.openai,
            status=429,
            refusal="limit-exceeded session.rpm",
        ),
        audit_row(
            DAY2 + 9,
            session_id=ids.session_a,
            credential_id=ids.openai,
            status=403,
            model="gpt-4o",
            tokens=(999_999, 999_999, 0),
            cost_usd=9.99,
            refusal="forbidden",
        ),
    ]


def group(
    key: str | None,
    requests: int,
    tokens: tuple[int, int, int] = (0, 0, 0),
    cost_usd: float = 0.0,
    unmetered: int = 0,
    unpriced: int = 0,
) -> dict[str, object]:
    """One item of ``GET /api/usage``, for comparing with what came back."""
    return {
        "key": key,
        "requests": requests,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cached_input_tokens": tokens[2],
        "cost_usd": cost_usd,
        "unmetered_requests": unmetered,
        "unpriced_requests": unpriced,
    }


def expected_groups(ids: Ids) -> dict[str, list[dict[str, object]]]:
    """What each ``by`` makes of ``sample_rows(ids)``, in the order it lists them."""
    return {
        "day": [
            group("2026-01-01", 2, (4000, 600, 100), 0.005),
            group("2026-01-02", 3, (500, 50, 0), 0.002, unmetered=2),
        ],
        "session": [
            group(ids.session_a, 2, (4000, 600, 100), 0.005),
            group(ids.session_b, 2, (500, 50, 0), 0.002, unmetered=1),
            group(None, 1, unmetered=1),
        ],
        "credential": [
            group(ids.openai, 2, (4000, 600, 100), 0.005),
            group(ids.anthropic, 1, (500, 50, 0), 0.002),
            # Equal cost (0) and requests: by key, NULL first.
            group(None, 1, unmetered=1),
            group(ids.github, 1, unmetered=1),
        ],
        "model": [
            group("gpt-4o", 2, (4000, 600, 100), 0.005),
            group("claude-sonnet-4-5", 1, (500, 50, 0), 0.002),
            group(None, 2, unmetered=2),
        ],
        "service": [
            group("openai", 3, (4000, 600, 100), 0.005, unmetered=1),
            group("anthropic", 1, (500, 50, 0), 0.002),
            group("github", 1, unmetered=1),
        ],
    }
