"""The audit table on a real database file: ``store.audit.prune`` (the age bound, each
session's share and the row bound, deleting in bounded chunks) and NULLs bound as NULL."""

from __future__ import annotations

import pytest
from sqlite_utils import Database

from tests.support.audit import audit_row, insert_audit
from vaultd.core.vault import Vault
from vaultd.store import audit

NOW = 1_767_225_600


@pytest.fixture
def db(opened_vault: Vault) -> Database:
    return opened_vault.db


def kept(db: Database) -> list[tuple[str | None, int]]:
    return [(r[0], r[1]) for r in db.conn.execute("SELECT session_id, at FROM audit ORDER BY id")]


def rows(session: str | None, ats: range) -> list[audit.AuditRow]:
    return [audit_row(at, session_id=session) for at in ats]


@pytest.mark.parametrize("chunk", [3, 10_000])
def test_prune_keeps_the_newest_of_each_session_within_the_bounds(
    db: Database, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """A chunk of 3 deletes each kind of row over several statements; the result
    is the same as in one."""
    monkeypatch.setattr(audit, "PRUNE_CHUNK", chunk)
    insert_audit(
        db,
        rows("old", range(NOW - 500, NOW - 490))  # ten rows past keep_seconds
        + rows("flood", range(NOW - 100, NOW - 60))  # 40 rows, over its share of 5
        + rows("a", range(NOW - 50, NOW - 47))
        + rows(None, range(NOW - 40, NOW - 32))  # rows without a session share one too
        + rows("b", range(NOW - 30, NOW - 27)),
    )
    with db.conn:
        audit.prune(db, keep_rows=20, keep_seconds=300, now=NOW)
    assert kept(db) == (
        [("flood", at) for at in range(NOW - 65, NOW - 60)]
        + [("a", at) for at in range(NOW - 50, NOW - 47)]
        + [(None, at) for at in range(NOW - 37, NOW - 32)]
        + [("b", at) for at in range(NOW - 30, NOW - 27)]
    )


def test_prune_keeps_the_newest_keep_rows_in_all(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "PRUNE_CHUNK", 4)
    sessions = [f"s{i}" for i in range(10)]
    insert_audit(db, [audit_row(NOW - 100 + i, session_id=sessions[i % 10]) for i in range(50)])
    with db.conn:
        audit.prune(db, keep_rows=12, keep_seconds=3600, now=NOW)
    assert [at for _, at in kept(db)] == list(range(NOW - 62, NOW - 50))


def test_prune_of_a_log_within_its_bounds_changes_nothing(db: Database) -> None:
    insert_audit(db, rows("a", range(NOW - 10, NOW)))
    with db.conn:
        audit.prune(db, keep_rows=100, keep_seconds=3600, now=NOW)
    assert len(kept(db)) == 10


def test_none_is_stored_as_null(db: Database) -> None:
    """The store registers an adapter for None (db.py): it must still bind NULL."""
    insert_audit(db, [audit_row(NOW, session_id=None)])
    null_columns = db.conn.execute(
        "SELECT session_id IS NULL, model IS NULL, cost_usd IS NULL, typeof(refusal) FROM audit"
    ).fetchone()
    assert null_columns == (1, 1, 1, "null")
