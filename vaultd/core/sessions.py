"""Session tokens: what a local tool holds instead of a key.

A token is ``fn_sess_`` + 43 base64url characters (32 random bytes). It is
returned once, at creation; the database keeps only its SHA-256 and its first
12 characters (``key_prefix``) so that people can tell tokens apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlite_utils import Database

from vaultd.core.policy import Policy, check_policy
from vaultd.errors import (
    AmbiguousReference,
    ErrorList,
    FieldError,
    NotFound,
    StorageError,
    Unauthorized,
    ValidationError,
)
from vaultd.models import (
    SESSION_LIMITS,
    Limits,
    check_known_service,
    check_limits,
    check_name,
    now,
    stored_json,
    stored_limits,
    uuid7,
)
from vaultd.store import counts
from vaultd.store.db import write_transaction
from vaultd.store.refs import id_by_prefix
from vaultd.tokens import KEY_PREFIX_LEN, TOKEN_PREFIX, TOKEN_RE, new_token, token_hash

SCOPES = ("proxy", "read", "admin")
DEFAULT_SCOPES = ("read", "proxy")
ALL_SERVICES = "*"


class Used(NamedTuple):
    """What a session (or a credential in a day) has used: DESIGN 10's counters."""

    requests: int
    tokens: int
    cost_usd: float

    def to_json(self) -> dict[str, int | float]:
        # Rounded to a millionth of a dollar: sums of floats grow noise digits.
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


def check_session_limits(value: object, pointer: str = "/limits") -> Limits | None:
    """A session's limits (DESIGN 10); ``None`` clears them."""
    return check_limits(value, SESSION_LIMITS, pointer)


def stored_policy(row: Mapping[str, Any]) -> Policy | None:
    """The ``policy`` column of a row read back from the (possibly edited) file.

    A damaged policy is an error, never "no policy": read as none, it would
    let the token do everything its policy forbids.
    """
    if row["policy"] is None:
        return None
    try:
        policy = check_policy(stored_json(row, "policy", dict))
    except ValidationError:
        policy = None
    if policy is None:
        raise StorageError(
            f"the database row {str(row['id'])[:40]!r} is damaged: its policy is not "
            "valid; revoke the session or restore a backup"
        )
    return policy


# What ``update`` leaves as it is.
KEEP: Any = object()


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    key_prefix: str
    scopes: tuple[str, ...]
    services: tuple[str, ...]
    created_at: int
    last_used_at: int | None
    expires_at: int | None
    revoked_at: int | None
    limits: Limits | None = None
    # Use so far, as last written (the daemon holds newer counts in memory:
    # proxy.counters).
    used: Used = field(default_factory=lambda: Used(0, 0, 0.0))
    # What the token may do (DESIGN 11); None: what its scopes and services allow.
    policy: Policy | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Session:
        return cls(
            id=row["id"],
            name=row["name"],
            key_prefix=row["key_prefix"],
            scopes=tuple(stored_json(row, "scopes", list)),
            services=tuple(stored_json(row, "services", list)),
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            limits=stored_limits(row, SESSION_LIMITS),
            used=Used(
                *counts.checked((row["used_requests"], row["used_tokens"], row["used_cost_usd"]))
            ),
            policy=stored_policy(row),
        )

    def status(self, at: int | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now() if at is None else at):
            return "expired"
        return "active"

    def has_scope(self, scope: str) -> bool:
        # admin does everything (DESIGN 5).
        return scope in self.scopes or "admin" in self.scopes

    def allows_service(self, service: str) -> bool:
        return ALL_SERVICES in self.services or service in self.services

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "key_prefix": self.key_prefix,
            "scopes": list(self.scopes),
            "services": list(self.services),
            "status": self.status(),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "limits": None if self.limits is None else dict(self.limits),
            "used": self.used.to_json(),
            "policy": None if self.policy is None else self.policy.to_json(),
        }


def check_scopes(value: object, pointer: str = "/scopes") -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError(FieldError(pointer, f"must be a non-empty list of {SCOPES}"))
    for i, scope in enumerate(value):
        if scope not in SCOPES:
            raise ValidationError(
                FieldError(f"{pointer}/{i}", f"must be one of {', '.join(SCOPES)}")
            )
    return tuple(dict.fromkeys(value))


def check_services(
    value: object, known: Iterable[str], pointer: str = "/services"
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError(FieldError(pointer, 'must be a non-empty list of services or ["*"]'))
    names = list(known)
    for i, service in enumerate(value):
        if service != ALL_SERVICES:
            check_known_service(service, names, f"{pointer}/{i}")
    if ALL_SERVICES in value:
        return (ALL_SERVICES,)
    return tuple(dict.fromkeys(value))


_COLUMNS = (
    "id, name, key_prefix, scopes, services, created_at, last_used_at, expires_at, revoked_at,"
    " limits, used_requests, used_tokens, used_cost_usd, policy"
)


def _limits_column(limits: Limits | None) -> str | None:
    return None if limits is None else json.dumps(limits, sort_keys=True)


def _policy_column(policy: Policy | None) -> str | None:
    return None if policy is None else json.dumps(policy.to_json())


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _rows(self, where: str, params: list[Any]) -> list[Session]:
        # ``where`` is built only from constants in this module; values are bound.
        sql = f"SELECT {_COLUMNS} FROM sessions {where} ORDER BY created_at, id"  # noqa: S608
        return [Session.from_row(r) for r in self.db.query(sql, params)]

    def create(
        self,
        *,
        name: object,
        scopes: object,
        services: object,
        ttl: int | None,
        known_services: Iterable[str],
        limits: object = None,
        policy: object = None,
    ) -> tuple[Session, str]:
        """A new session and its token; the token is not kept anywhere after this."""
        errors = ErrorList()
        checked: dict[str, Any] = {
            "name": errors.check(check_name, name),
            "scopes": errors.check(check_scopes, scopes),
            "services": errors.check(check_services, services, known_services),
            "limits": errors.check(check_session_limits, limits),
            "policy": errors.check(check_policy, policy),
        }
        errors.raise_if_any()
        token = new_token()
        session_id = uuid7()
        stamp = now()
        with write_transaction(self.db) as conn:
            conn.execute(
                "INSERT INTO sessions (id, name, key_prefix, token_hash, scopes, services,"
                " created_at, last_used_at, expires_at, revoked_at, limits, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?)",
                [
                    session_id,
                    checked["name"],
                    token[:KEY_PREFIX_LEN],
                    token_hash(token),
                    json.dumps(list(checked["scopes"])),
                    json.dumps(list(checked["services"])),
                    stamp,
                    None if ttl is None else stamp + ttl,
                    _limits_column(checked["limits"]),
                    _policy_column(checked["policy"]),
                ],
            )
        return self.get(session_id), token

    def list(self) -> list[Session]:
        return self._rows("", [])

    def count_active(self, at: int) -> int:
        """Sessions neither revoked nor expired at ``at`` (``Session.status``)."""
        row = self.db.execute(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?)",
            [at],
        ).fetchone()
        return int(row[0])

    def get(self, session_id: str) -> Session:
        rows = self._rows("WHERE id = ?", [session_id])
        if not rows:
            raise NotFound(f"no session with id {session_id}")
        return rows[0]

    def authenticate(self, token: str) -> Session:
        """The active session for ``token``; ``Unauthorized`` for anything else.

        The lookup is by the token's SHA-256: the database never holds or
        compares the token itself, and a timing difference in the index lookup
        says something only about a hash, which does not help forge a token.
        """
        if not TOKEN_RE.fullmatch(token):
            raise Unauthorized("the token is missing or malformed")
        rows = self._rows("WHERE token_hash = ?", [token_hash(token)])
        if not rows:
            raise Unauthorized("the token is not valid")
        status = rows[0].status()
        if status != "active":
            raise Unauthorized(f"the token is {status}")
        return rows[0]

    def revoke(self, session_id: str) -> Session:
        with write_transaction(self.db) as conn:
            session = self.get(session_id)
            if session.revoked_at is None:
                conn.execute("UPDATE sessions SET revoked_at = ? WHERE id = ?", [now(), session_id])
        return self.get(session_id)

    def extend(self, session_id: str, until: int, *, cap: int | None = None) -> Session:
        """Move the end of a session's lease to ``until`` (at most ``cap``); the session after.

        ``vaultd run`` renews its session so while its command lives. Only
        ever later: a revoked session, or one that never expires, is left as
        it is, and so is one whose end is already at ``until`` or past it. A
        lease that lapsed while its holder could not renew it (a suspended
        laptop: the clock ran on, the holder did not) is taken up again,
        since only the live ``vaultd run`` that made it knows its id; a
        killed one renews nothing, so its token stays dead. ``NotFound`` if
        the session is gone (pruned, or never existed).
        """
        target = until if cap is None else min(until, cap)
        with write_transaction(self.db) as conn:
            self.get(session_id)
            conn.execute(
                "UPDATE sessions SET expires_at = ? WHERE id = ? AND revoked_at IS NULL"
                " AND expires_at IS NOT NULL AND expires_at < ?",
                [target, session_id, target],
            )
        return self.get(session_id)

    def set_limits(self, session_id: str, limits: object) -> Session:
        """Replace the session's limits (``None`` clears them); its use so far stays."""
        return self.update(session_id, limits=limits)

    def update(self, session_id: str, *, limits: object = KEEP, policy: object = KEEP) -> Session:
        """Replace the session's limits and/or policy (``None`` clears one; ``KEEP``
        leaves it), both checked first and written in one transaction."""
        errors = ErrorList()
        columns: dict[str, str | None] = {}
        if limits is not KEEP:
            columns["limits"] = _limits_column(errors.check(check_session_limits, limits))
        if policy is not KEEP:
            columns["policy"] = _policy_column(errors.check(check_policy, policy))
        errors.raise_if_any()
        with write_transaction(self.db) as conn:
            self.get(session_id)
            for column, value in columns.items():
                # ``column`` is one of the two names above; values are bound.
                conn.execute(
                    f"UPDATE sessions SET {column} = ? WHERE id = ?",  # noqa: S608
                    [value, session_id],
                )
        return self.get(session_id)

    def resolve(self, ref: str) -> Session:
        """A session by id or unique id prefix, by the key prefix ``session list``
        shows (``fn_sess_AbCd``, or the start of one), or by its whole token."""
        if not ref.startswith(TOKEN_PREFIX):
            return self.get(id_by_prefix(self.db, "sessions", ref, noun="session"))
        if TOKEN_RE.fullmatch(ref):
            rows = self._rows("WHERE token_hash = ?", [token_hash(ref)])
            if not rows:
                raise NotFound("no session has that token")
            return rows[0]
        if len(ref) > KEY_PREFIX_LEN:
            # Longer than a key prefix: a mistyped token, never to be repeated.
            raise NotFound(
                f"that is neither a session's key prefix ({KEY_PREFIX_LEN} characters) "
                "nor a whole token"
            )
        rows = self._rows("WHERE substr(key_prefix, 1, ?) = ?", [len(ref), ref])
        if not rows:
            raise NotFound(f"no session with key prefix {ref!r}")
        if len(rows) > 1:
            # Key prefixes are 24 random bits: two sessions can share one.
            ids = ", ".join(s.id for s in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise AmbiguousReference(
                f"{ref!r} is the key prefix of {len(rows)} sessions ({ids}); give the id"
            )
        return rows[0]

    def prune(self, ended_before: int) -> int:
        """Delete the sessions revoked or expired before ``ended_before``; how many.

        Audit rows name their session by id with no foreign key, so those of a
        deleted session stay (listings then show the id).
        """
        with write_transaction(self.db) as conn:
            # A session ended at whichever of revoked_at and expires_at came
            # first; with neither, it has not ended (SQLite's two-argument
            # min() is NULL if either is).
            cursor = conn.execute(
                "DELETE FROM sessions WHERE min(coalesce(revoked_at, expires_at),"
                " coalesce(expires_at, revoked_at)) < ?",
                [ended_before],
            )
        return cursor.rowcount
