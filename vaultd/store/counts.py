"""The stored use counters that limits are checked against (DESIGN 10).

A session's lifetime use is on its row; a credential's use per UTC day is in
``credential_daily``. Only the daemon writes them (``proxy.counters`` keeps
the live counts; the usage writer calls ``write`` in each flush), as
absolute values: a flush retried after a failure writes the same numbers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from sqlite_utils import Database

Counts = tuple[int, int, float]  # requests, tokens, cost in US dollars
# Day rows older than this are dropped when the audit log is pruned: a daily
# limit needs only today's.
KEEP_DAYS = 400
# The most request times read back for one session's rpm window.
MAX_RECENT = 100_000
# What a stored count can be, and where the live counters stop (core.limits):
# exact in a double and in SQLite's INTEGER, and above every limit
# (models.LIMIT_MAX_COUNT, LIMIT_MAX_USD).
MAX_COUNT = 2**53 - 1
MAX_COST = 1e15


def session_counts(db: Database, session_id: str) -> Counts:
    row = db.execute(
        "SELECT used_requests, used_tokens, used_cost_usd FROM sessions WHERE id = ?",
        [session_id],
    ).fetchone()
    return checked(row)


def credential_day(db: Database, credential_id: str, day: int) -> Counts:
    row = db.execute(
        "SELECT requests, tokens, cost_usd FROM credential_daily"
        " WHERE credential_id = ? AND day = ?",
        [credential_id, day],
    ).fetchone()
    return checked(row)


def credential_days(db: Database, day: int) -> dict[str, Counts]:
    """Every credential's counts of ``day`` (for listings)."""
    rows = db.execute(
        "SELECT credential_id, requests, tokens, cost_usd FROM credential_daily WHERE day = ?",
        [day],
    ).fetchall()
    return {row[0]: checked(row[1:]) for row in rows}


def recent_requests(db: Database, session_id: str, since: float) -> list[float]:
    """When the session's requests that went upstream since ``since`` were made."""
    rows = db.execute(
        "SELECT at FROM audit WHERE at >= ? AND session_id = ? AND refusal IS NULL"
        " ORDER BY id DESC LIMIT ?",
        [int(since), session_id, MAX_RECENT],
    ).fetchall()
    return [float(row[0]) for row in rows]


def write(
    conn: sqlite3.Connection,
    sessions: Iterable[tuple[str, Counts]],
    days: Iterable[tuple[tuple[str, int], Counts]],
) -> None:
    """Store absolute counts, inside the caller's transaction.

    A session or credential deleted meanwhile is skipped rather than failing
    the flush (which would then be retried for ever).
    """
    conn.executemany(
        "UPDATE sessions SET used_requests = ?, used_tokens = ?, used_cost_usd = ? WHERE id = ?",
        [(*counts, session_id) for session_id, counts in sessions],
    )
    conn.executemany(
        "INSERT INTO credential_daily (credential_id, day, requests, tokens, cost_usd)"
        " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM credentials WHERE id = ?)"
        " ON CONFLICT (credential_id, day) DO UPDATE SET requests = excluded.requests,"
        " tokens = excluded.tokens, cost_usd = excluded.cost_usd",
        [(cid, day, *counts, cid) for (cid, day), counts in days],
    )


def prune_days(conn: sqlite3.Connection, today: int) -> None:
    conn.execute("DELETE FROM credential_daily WHERE day < ?", [today - KEEP_DAYS])


def checked(row: Sequence[object] | None) -> Counts:
    """Counts read back from the file, which is input too: a damaged one (text, a
    negative, an infinity, past what a count can reach) reads as 0, never a crash
    nor a JSON answer with Infinity in it."""
    if row is None:
        return (0, 0, 0.0)
    requests, tokens, cost = row
    return (
        requests if type(requests) is int and 0 <= requests <= MAX_COUNT else 0,
        tokens if type(tokens) is int and 0 <= tokens <= MAX_COUNT else 0,
        # NaN fails the comparison too.
        float(cost) if isinstance(cost, int | float) and 0 <= cost <= MAX_COST else 0.0,
    )
