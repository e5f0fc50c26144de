"""The audit log: one row per proxied request, newest first, bounded in size and age.

A row says who (session), with what (credential), where (service, method, path
without its query string), how it went (status, duration, bytes), what it
used (model, tokens, cost: DESIGN 10) and, when vaultd refused it, why. It
never holds a secret, a token or a query string, which could carry a key.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from itertools import chain
from typing import Any, Final, NamedTuple

from sqlite_utils import Database

from vaultd.tokens import redact_path

MAX_LIMIT = 1000
MAX_PATH = 2048


def audit_path(rest: str) -> str:
    """The proxied path tail (still percent-encoded) as an audit row keeps it.

    A client can put anything in its path, its own session token included:
    that is cut to its key prefix as in every log line (``redact_path``).
    """
    return redact_path("/" + rest[:MAX_PATH])


class AuditEntry(NamedTuple):
    """One audit row as read back (the proxy writes them as ``AuditRow`` tuples)."""

    at: int
    request_id: str
    session_id: str | None
    credential_id: str | None
    service: str
    method: str
    path: str
    status: int
    duration_ms: float
    bytes_in: int
    bytes_out: int
    # Metering (DESIGN 10): null when the answer was not metered.
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cost_usd: float | None
    # Why vaultd refused the request before it went upstream (a problem slug,
    # and the limit of a limit-exceeded); null when it went upstream.
    refusal: str | None
    # 1: the answer ended before its usage was whole (counted as far as seen).
    usage_partial: int | None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


# What the proxy records for each request: ``AuditEntry``'s fields but ``id``,
# in the same order, as a plain tuple. One is made per proxied request: a
# plain tuple is the cheapest record Python makes, and one of plain values
# the garbage collector stops tracking at its first pass (a named tuple, as a
# subclass, stays tracked, and passes through every generation as it waits up
# to a flush interval in the batch).
AuditRow = tuple[
    int,
    str,
    str | None,
    str | None,
    str,
    str,
    str,
    int,
    float,
    int,
    int,
    str | None,
    int | None,
    int | None,
    int | None,
    float | None,
    str | None,
    int | None,
]
# The columns an AuditRow binds to, and a read returns after ``id``.
ROW_FIELDS = AuditEntry._fields[:-1]
# Where a reader of an AuditRow finds the fields it needs, so that it reads
# ``row[ROW_STATUS]`` and not ``row[7]``. Literals, so that mypy knows each
# field's type; the check below keeps them true to the field names.
ROW_AT: Final = 0
ROW_SESSION_ID: Final = 2
ROW_CREDENTIAL_ID: Final = 3
ROW_STATUS: Final = 7
assert [ROW_FIELDS[i] for i in (ROW_AT, ROW_SESSION_ID, ROW_CREDENTIAL_ID, ROW_STATUS)] == [
    "at",
    "session_id",
    "credential_id",
    "status",
]
# Rows per INSERT statement: whole batches go in as a few statements of this
# many rows, the tail in powers of two, so that at most nine distinct
# statements are ever prepared (and kept in sqlite3's statement cache).
ROWS_PER_INSERT = 256


@functools.lru_cache(maxsize=16)
def insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` audit rows, bound as their fields in order.

    Many rows per statement: the write-behind thread steps SQLite (and gives
    up the GIL) once per statement rather than once per row, which under load
    stalled the event loop's thread at every handoff. SQLite assigns ``id``.
    """
    one = "(" + ", ".join("?" * len(ROW_FIELDS)) + ")"
    columns = ", ".join(ROW_FIELDS)
    return f"INSERT INTO audit ({columns}) VALUES " + ", ".join([one] * rows)  # noqa: S608


def insert_batches(entries: list[AuditRow]) -> Iterator[tuple[str, list[Any]]]:
    """``entries`` as (statement, flat parameters) pairs, in order."""
    start = 0
    while start < len(entries):
        left = len(entries) - start
        rows = ROWS_PER_INSERT if left >= ROWS_PER_INSERT else 1 << (left.bit_length() - 1)
        chunk = entries[start : start + rows]
        yield insert_sql(rows), list(chain.from_iterable(chunk))
        start += rows


def list_entries(
    db: Database,
    *,
    service: str | None = None,
    credential_id: str | None = None,
    session_id: str | None = None,
    status: tuple[int, int] | None = None,
    refused: bool | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first. ``status``: the range [low, high) the status falls in (one code,
    or a class such as 400-500); ``refused``: only rows vaultd refused (True) or
    only those that went upstream (False); ``until`` is exclusive."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("service", service),
        ("credential_id", credential_id),
        ("session_id", session_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if status is not None:
        clauses.append("status >= ? AND status < ?")
        params.extend(status)
    if refused is not None:
        clauses.append("refusal IS NOT NULL" if refused else "refusal IS NULL")
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("at < ?")
        params.append(until)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    params.append(min(limit, MAX_LIMIT))
    rows = db.query(
        f"SELECT id, {', '.join(ROW_FIELDS)} FROM audit {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
        params,
    )
    return [AuditEntry(**row) for row in rows]


# The most rows one session may hold: a quarter of [audit] max_rows. A
# token's holder can make as many refused (and so cheap) requests as it
# likes, and every one is audited; without a share of its own, a flood from
# one session would push every other session's rows out of the table.
SESSION_SHARE = 4


# Rows deleted per statement while pruning. SQLite keeps the id of every row a
# DELETE removes in memory until it ends (its RowSet): one statement for a busy
# minute's rows (hundreds of thousands) raised the daemon's peak memory by 4 MiB.
PRUNE_CHUNK = 10_000


def prune(db: Database, *, keep_rows: int, keep_seconds: int, now: int) -> None:
    """Drop rows older than ``keep_seconds``, then each session's beyond its share
    of ``keep_rows`` (oldest first), then any beyond the newest ``keep_rows``."""
    conn = db.conn
    _delete_where(conn, "at < ?", [now - keep_seconds])
    share = max(1, keep_rows // SESSION_SHARE)
    # Only the sessions over their share (a count per session: no sort of every
    # row, as a window over the table took); each keeps its newest ``share``.
    over = conn.execute(
        "SELECT session_id FROM audit GROUP BY session_id HAVING count(*) > ?", [share]
    ).fetchall()
    for (session_id,) in over:
        oldest_kept = conn.execute(
            "SELECT id FROM audit WHERE session_id IS ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            [session_id, share - 1],
        ).fetchone()
        if oldest_kept is not None:
            _delete_where(conn, "session_id IS ? AND id < ?", [session_id, oldest_kept[0]])
    # Counted in rows, not ids: the deletes above leave gaps in the ids.
    oldest_kept = conn.execute(
        "SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?", [keep_rows - 1]
    ).fetchone()
    if oldest_kept is not None:
        _delete_where(conn, "id < ?", [oldest_kept[0]])


def _delete_where(conn: sqlite3.Connection, where: str, params: list[Any]) -> None:
    """DELETE FROM audit WHERE ``where``, ``PRUNE_CHUNK`` rows per statement."""
    statement = (
        f"DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE {where} LIMIT {PRUNE_CHUNK})"  # noqa: S608
    )
    # Bounded: each round deletes a full chunk or ends the loop, and the table is finite.
    while conn.execute(statement, params).rowcount == PRUNE_CHUNK:
        pass
