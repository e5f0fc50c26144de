"""``vaultd usage``: the table, its totals and its labels, and ``--json`` equal to the API's.

The database is a real file with the sample audit rows (tests/support/audit.py)
naming real sessions and credentials, so that labels can be checked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from tests.support.audit import DAY2, Ids, audit_row, insert_audit, sample_rows
from tests.support.cli import CLI
from tests.support.http import bearer, mint_token, start_client
from vaultd.store.usage import USAGE_BY

HEADERS = ["REQUESTS", "INPUT", "OUTPUT", "CACHED", "COST", "UNMETERED", "UNPRICED"]


@pytest.fixture
def logged(initialised: CLI) -> tuple[CLI, Ids]:
    """A vault with three credentials, two sessions, and the sample rows naming them."""
    added = {
        service: initialised.add(service, name, f"sk-{service}-abcdefghijklmnop0001")["id"]
        for service, name in (("openai", "primary"), ("anthropic", "main"), ("github", "gh"))
    }
    with initialised.vault() as vault:
        worker, batch = (
            vault.sessions.create(
                name=name, scopes=["proxy"], services=["*"], ttl=3600, known_services=["openai"]
            )[0].id
            for name in ("worker", "batch")
        )
        ids = Ids(worker, batch, added["openai"], added["anthropic"], added["github"])
        insert_audit(vault.db, sample_rows(ids))
    return initialised, ids


def table(env: CLI, *args: str) -> list[list[str]]:
    """The rows of ``vaultd usage ARGS``, each split into its cells."""
    out = env.ok("usage", *args).stdout
    return [line.split("  ") for line in out.splitlines()]


def cells(line: list[str]) -> list[str]:
    return [c.strip() for c in line if c.strip()]


def test_by_credential_names_each_and_totals(logged: tuple[CLI, Ids]) -> None:
    env, _ids = logged
    rows = [cells(r) for r in table(env, "--by", "credential")]
    assert rows == [
        ["CREDENTIAL", *HEADERS],
        ["openai/primary", "2", "4,000", "600", "100", "$0.0050", "0", "0"],
        ["anthropic/main", "1", "500", "50", "0", "$0.0020", "0", "0"],
        ["-", "1", "0", "0", "0", "$0.0000", "1", "0"],
        ["github/gh", "1", "0", "0", "0", "$0.0000", "1", "0"],
        ["TOTAL", "5", "4,500", "650", "100", "$0.0070", "2", "0"],
    ]


def test_numbers_line_up_on_the_right(logged: tuple[CLI, Ids]) -> None:
    env, _ids = logged
    out = env.ok("usage", "--by", "service").stdout.splitlines()
    # The last column is padded on the left to the width of its header.
    assert len({len(line) for line in out}) == 1, out
    ends = {line.index("$") + len("$0.0000") for line in out[1:]}
    assert len(ends) == 1


def test_by_session_shows_its_name_and_an_id_prefix(logged: tuple[CLI, Ids]) -> None:
    env, ids = logged
    labels = [cells(r)[0] for r in table(env, "--by", "session")]
    assert labels[0] == "SESSION" and labels[-2:] == ["-", "TOTAL"]
    worker, batch = labels[1:3]
    # The two were made in one millisecond or so: their ids start alike, and
    # each is shown as far as needed to tell it from the other.
    assert worker.startswith("worker (") and batch.startswith("batch (")
    worker_prefix, batch_prefix = (label.split("(")[1].rstrip(")") for label in (worker, batch))
    assert ids.session_a.startswith(worker_prefix) and ids.session_b.startswith(batch_prefix)
    assert len(worker_prefix) >= 8
    assert not ids.session_b.startswith(worker_prefix)
    assert not ids.session_a.startswith(batch_prefix)


def test_a_deleted_credential_shows_its_id(logged: tuple[CLI, Ids]) -> None:
    env, ids = logged
    env.ok("rm", "github/gh", "--yes")
    labels = [cells(r)[0] for r in table(env, "--by", "credential")]
    assert ids.github in labels and "github/gh" not in labels


def test_by_day_and_model_and_windows(logged: tuple[CLI, Ids]) -> None:
    env, _ids = logged
    days = [cells(r)[:2] for r in table(env)]
    assert days == [["DAY", "REQUESTS"], ["2026-01-01", "2"], ["2026-01-02", "3"], ["TOTAL", "5"]]
    later = [cells(r)[:2] for r in table(env, "--since", str(DAY2))]
    assert later == [["DAY", "REQUESTS"], ["2026-01-02", "3"], ["TOTAL", "3"]]
    models = [cells(r)[0] for r in table(env, "--by", "model", "--until", str(DAY2))]
    assert models == ["MODEL", "gpt-4o", "TOTAL"]


def test_large_numbers_and_control_characters(logged: tuple[CLI, Ids]) -> None:
    env, _ids = logged
    with env.vault() as vault:
        row = audit_row(DAY2, model="evil\x1b]0;pwned\x07", tokens=(1_234_567, 0, 0), cost_usd=12.5)
        insert_audit(vault.db, [row])
    out = env.ok("usage", "--by", "model").stdout
    assert "\x1b" not in out and "\x07" not in out
    first = cells(out.splitlines()[1].split("  "))
    assert first[:3] == ["evil\\x1b]0;pwned\\x07", "1", "1,234,567"]
    assert "$12.5000" in first


def test_nothing_recorded(initialised: CLI) -> None:
    result = initialised.ok("usage")
    assert result.stdout == ""
    assert result.stderr.strip() == "no proxied requests recorded"
    assert json.loads(initialised.ok("usage", "--json").stdout) == []
    result = initialised.ok("usage", "--since", "1h")
    assert result.stderr.strip() == "no proxied requests recorded in that time"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--by", "week"), "--by"),
        (("--since", "yesterday"), "--since"),
        (("--until", "-1"), "--until"),
        (("--since", "2h", "--until", "3h"), "--until"),
    ],
)
def test_bad_options_are_usage_errors(initialised: CLI, args: tuple[str, ...], says: str) -> None:
    assert says in initialised.fails("usage", *args, code=2)


async def test_json_is_the_api_shape(
    logged: tuple[CLI, Ids], aiohttp_client: AiohttpClient
) -> None:
    env, _ids = logged
    config = env.config
    client = await start_client(aiohttp_client, config)
    with env.vault() as vault:
        token = mint_token(vault, config, scopes=["read"])
    for by in USAGE_BY:
        for window in ((), ("--since", str(DAY2))):
            printed: list[dict[str, Any]] = json.loads(
                env.ok("usage", "--by", by, *window, "--json").stdout
            )
            query = f"?by={by}" + (f"&since={DAY2}" if window else "")
            response = await client.get(f"/api/usage{query}", headers=bearer(token))
            assert printed == await response.json(), (by, window)
            assert printed
