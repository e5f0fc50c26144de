"""The audit log: one row per proxied request, newest first, bounded in size and age.

A row says who (session), with what (credential), where (service, method, path
without its query string), and how it went (status, duration, bytes). It never
holds a secret, a token or a query string, which could carry a key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

from sqlite_utils import Database

from vaultd.problems import redact

_COLUMNS = (
    "at",
    "request_id",
    "session_id",
    "credential_id",
    "service",
    "method",
    "path",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
)
# A whole batch in one statement, from one JSON array of rows: the write-behind
# thread then releases and retakes the GIL once per flush instead of once per
# row, which under load stalled the event loop's thread at every handoff.
INSERT_BATCH_SQL = (
    f"INSERT INTO audit ({', '.join(_COLUMNS)}) SELECT "  # noqa: S608
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_COLUMNS)))
    + " FROM json_each(?)"
)
MAX_LIMIT = 1000
MAX_PATH = 2048


def audit_path(rest: str) -> str:
    """The proxied path tail (still percent-encoded) as an audit row keeps it.

    A client can put anything in its path, its own session token included:
    that is cut to its key prefix as in every log line, also when the client
    percent-encoded it to slip past a plain match.
    """
    path = "/" + rest[:MAX_PATH]
    if "%" in path:
        decoded = unquote(path, errors="replace")
        if "sess" in decoded:
            scrubbed = redact(decoded)
            if scrubbed != decoded:
                return scrubbed
    # "sess" is in every token prefix: most paths skip the regex altogether.
    return redact(path) if "sess" in path else path


@dataclass(frozen=True, slots=True)
class AuditEntry:
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
    id: int | None = None

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in _COLUMNS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_entries(
    db: Database,
    *,
    service: str | None = None,
    credential_id: str | None = None,
    since: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("service", service), ("credential_id", credential_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    params.append(min(limit, MAX_LIMIT))
    rows = db.query(
        f"SELECT id, {', '.join(_COLUMNS)} FROM audit {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
        params,
    )
    return [AuditEntry(**row) for row in rows]


def prune(db: Database, *, keep_rows: int, keep_seconds: int, now: int) -> None:
    """Drop rows beyond the newest ``keep_rows`` or older than ``keep_seconds``."""
    db.conn.execute("DELETE FROM audit WHERE at < ?", [now - keep_seconds])
    db.conn.execute(
        "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?",
        [keep_rows],
    )
