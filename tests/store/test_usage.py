"""``store.usage``: the audit log summed per group, on a real database file (DESIGN 10)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlite_utils import Database

from tests.support.audit import (
    DAY1,
    DAY2,
    audit_row,
    expected_groups,
    insert_audit,
    new_ids,
    sample_rows,
)
from vaultd.core.vault import Vault
from vaultd.store.usage import MAX_GROUPS, USAGE_BY, usage_groups

IDS = new_ids()


def groups(
    db: Database, by: str, since: int | None = None, until: int | None = None
) -> list[dict[str, Any]]:
    return [g.to_json() for g in usage_groups(db, by=by, since=since, until=until)]


@pytest.fixture
def db(opened_vault: Vault) -> Database:
    return opened_vault.db


@pytest.mark.parametrize("by", USAGE_BY)
def test_each_grouping_counts_what_went_upstream(db: Database, by: str) -> None:
    insert_audit(db, sample_rows(IDS))
    assert groups(db, by) == expected_groups(IDS)[by]


def test_an_empty_log_has_no_groups(db: Database) -> None:
    assert all(groups(db, by) == [] for by in USAGE_BY)


def test_refused_rows_are_not_counted_whatever_they_carry(db: Database) -> None:
    refused = [
        audit_row(DAY1, model="m", tokens=(5, 5, 5), cost_usd=1.0, refusal=reason, status=429)
        for reason in ("limit-exceeded session.max_cost_usd", "unmeterable", "payload-too-large")
    ]
    insert_audit(db, [*refused, audit_row(DAY1 + 1, model="m")])
    assert groups(db, "model") == [
        {
            "key": "m",
            "requests": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "cost_usd": 0.0,
            "unmetered_requests": 1,
            "unpriced_requests": 0,
        }
    ]


def test_since_is_inclusive_and_until_exclusive(db: Database) -> None:
    insert_audit(db, sample_rows(IDS))
    day1, day2 = expected_groups(IDS)["day"]
    assert groups(db, "day", since=DAY2) == [day2]
    assert groups(db, "day", until=DAY2) == [day1]
    assert groups(db, "day", since=DAY1 + 10, until=DAY1 + 11)[0]["requests"] == 1
    assert groups(db, "day", since=DAY1 + 11, until=DAY1 + 20) == []
    # Back-to-back windows add up to the whole.
    halves = groups(db, "service", until=DAY2 + 6) + groups(db, "service", since=DAY2 + 6)
    assert sum(g["requests"] for g in halves) == 5


def test_one_query_per_call(db: Database) -> None:
    insert_audit(db, sample_rows(IDS))
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        for by in USAGE_BY:
            usage_groups(db, by=by, since=DAY1, until=DAY2 + 86_400)
    finally:
        db.conn.set_trace_callback(None)
    assert len(statements) == len(USAGE_BY), statements


def test_cost_is_rounded_to_a_millionth_of_a_dollar(db: Database) -> None:
    insert_audit(
        db,
        [audit_row(DAY1, model="m", tokens=(1, 1, 0), cost_usd=c) for c in (0.1, 0.2, 3e-7)],
    )
    # 0.1 + 0.2 + 3e-7 is 0.3000003000000000x in floats.
    assert groups(db, "model")[0]["cost_usd"] == 0.300000


def test_metered_requests_without_a_price_are_counted_as_unpriced(db: Database) -> None:
    insert_audit(
        db,
        [
            audit_row(DAY1, model="priced", tokens=(10, 5, 0), cost_usd=0.25),
            audit_row(DAY1 + 1, model="my-finetune", tokens=(10, 5, 0), cost_usd=None),
            audit_row(DAY1 + 2),  # unmetered: neither
        ],
    )
    (day,) = groups(db, "day")
    assert (day["requests"], day["unmetered_requests"], day["unpriced_requests"]) == (3, 1, 1)
    # Its cost is not in the sum, which is therefore a lower bound.
    assert day["cost_usd"] == 0.25


def test_sums_past_64_bits_do_not_fail(db: Database) -> None:
    # SQLite's SUM() raises "integer overflow" here; a hostile upstream's counts
    # must not turn GET /api/usage into a 500.
    big = 2**62
    insert_audit(db, [audit_row(DAY1 + i, model="m", tokens=(big, big, big)) for i in range(3)])
    (only,) = groups(db, "model")
    assert only["input_tokens"] == 3 * big


def test_damaged_values_read_as_what_they_can_be(db: Database) -> None:
    insert_audit(db, [audit_row(DAY1, model="m", tokens=(1, 2, 3), cost_usd=1.5)])
    with db.conn:
        db.conn.execute(
            "INSERT INTO audit (at, request_id, session_id, service, method, path, status,"
            " duration_ms, bytes_in, bytes_out, model, input_tokens, cost_usd)"
            " VALUES ('soon', 'r', 42, 'openai', 'GET', '/', 200, 0, 0, 0, 7, 1e999, 1e999)"
        )
    by_model = groups(db, "model")
    # JSON that any parser reads: no Infinity.
    assert json.loads(json.dumps(by_model, allow_nan=False)) == by_model
    assert {g["key"] for g in by_model} == {"m", "7"}
    assert all(g["input_tokens"] in (0, 1) for g in by_model)
    assert [g["key"] for g in groups(db, "day")] == [None, "2026-01-01"]
    assert {g["key"] for g in groups(db, "session")} == {None, "42"}


def test_at_most_max_groups_the_largest(db: Database) -> None:
    rows = [
        audit_row(DAY1, model=f"model-{i:04}", tokens=(1, 1, 0), cost_usd=i / 1000)
        for i in range(MAX_GROUPS + 5)
    ]
    insert_audit(db, rows)
    listed = groups(db, "model")
    assert len(listed) == MAX_GROUPS
    # The largest by cost, largest first: the five cheapest are left out.
    assert listed[0]["key"] == f"model-{MAX_GROUPS + 4:04}"
    assert listed[-1]["key"] == "model-0005"


def test_at_most_max_groups_of_days_the_newest_in_date_order(db: Database) -> None:
    insert_audit(db, [audit_row(DAY1 + day * 86_400) for day in range(MAX_GROUPS + 5)])
    listed = [g["key"] for g in groups(db, "day")]
    assert len(listed) == MAX_GROUPS
    assert listed == sorted(listed)
    assert listed[0] == "2026-01-06"  # the five oldest days are left out


def test_an_unknown_grouping_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        usage_groups(db, by="week", since=None, until=None)
