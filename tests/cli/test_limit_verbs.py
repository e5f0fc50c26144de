"""Limits from the command line, on a real database file: set, change, clear, show."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.cli import CLI
from vaultd.core.limits import utc_day
from vaultd.store import counts
from vaultd.store.db import write_transaction

SECRET = "sk-proj-LIMITVERBSkey0123456789"


def sessions(cli: CLI) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(cli.ok("session", "list", "--json").stdout)
    return listed


def test_session_create_with_limits_then_change_and_clear_them(initialised: CLI) -> None:
    token = initialised.ok(
        "session",
        "create",
        "--name",
        "agent",
        "--max-requests",
        "500",
        "--max-cost",
        "5",
        "--rpm",
        "60",
    ).stdout.strip()
    assert token.startswith("fn_sess_")
    (made,) = sessions(initialised)
    assert made["limits"] == {"max_requests": 500, "max_cost_usd": 5.0, "rpm": 60}
    assert made["used"] == {"requests": 0, "tokens": 0, "cost_usd": 0}
    table = initialised.ok("session", "list").stdout
    assert "0/500 req" in table and "$0.0000/$5" in table
    # The flags given replace theirs; the others stay.
    out = initialised.ok("session", "limit", str(made["id"])[:12], "--max-cost", "10").stdout
    assert "max_cost_usd 10" in out and "max_requests 500" in out
    assert sessions(initialised)[0]["limits"] == {
        "max_requests": 500,
        "max_cost_usd": 10.0,
        "rpm": 60,
    }
    # --clear first, then what is given.
    initialised.ok("session", "limit", str(made["id"]), "--clear", "--concurrency", "2")
    assert sessions(initialised)[0]["limits"] == {"concurrency": 2}
    initialised.ok("session", "limit", str(made["id"]), "--clear")
    assert sessions(initialised)[0]["limits"] is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--max-requests", "0"), "--max-requests must be a positive integer"),
        (("--max-tokens", "-5"), "--max-tokens must be a whole number, not '-5'"),
        (("--rpm", "1.5"), "--rpm must be a whole number, not '1.5'"),
        (("--concurrency", "9223372036854775808"), "--concurrency must be at most"),
        (("--max-cost", "inf"), "--max-cost must be a number of US dollars"),
        (("--max-cost", "1e-300"), "--max-cost must be a number of US dollars"),
        (("--max-cost", "0.0000001"), "--max-cost must be from 0.000001 to 1000000000"),
        (("--max-cost", "five"), "--max-cost must be a number of US dollars"),
    ],
)
def test_bad_limit_flags_are_one_line_and_change_nothing(
    initialised: CLI, args: tuple[str, ...], says: str
) -> None:
    assert says in initialised.fails("session", "create", *args, code=2)
    assert sessions(initialised) == []


def test_limit_verbs_need_something_to_do(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    assert "give a limit to set, or --clear" in initialised.fails("limit", "openai/primary", code=2)
    initialised.ok("session", "create")
    (made,) = sessions(initialised)
    assert "give a limit" in initialised.fails("session", "limit", str(made["id"]), code=2)


def test_credential_daily_limits_and_todays_use(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    shown = json.loads(
        initialised.ok("limit", "openai/primary", "--max-requests-per-day", "100", "--json").stdout
    )
    assert shown["limits"] == {"max_requests_per_day": 100}
    initialised.ok("limit", "openai/primary", "--max-cost-per-day", "2.5")
    (item,) = initialised.listing()
    assert item["limits"] == {"max_requests_per_day": 100, "max_cost_usd_per_day": 2.5}
    # What the daemon would have written for today.
    with initialised.vault() as vault, write_transaction(vault.db) as conn:
        counts.write(conn, [], [((item["id"], utc_day(time.time())), (7, 1234, 0.0625))])
    text = initialised.ok("show", "openai/primary").stdout
    assert "max_requests_per_day 100, max_cost_usd_per_day 2.5 (UTC day)" in text
    assert "7 requests, 1234 tokens, $0.0625 (UTC day)" in text
    initialised.ok("limit", "openai/primary", "--clear")
    assert initialised.listing()[0]["limits"] is None
    assert "--max-tokens-per-day must be a positive integer" in initialised.fails(
        "limit", "openai/primary", "--max-tokens-per-day", "0", code=2
    )
