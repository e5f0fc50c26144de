"""The SQLite file: connection settings and numbered schema migrations."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from vaultd.errors import StorageError

# How long a writer waits for another process's lock before "database is locked".
BUSY_TIMEOUT_MS = 10_000


def _as_null(value: None) -> None:
    return value


# sqlite3 binds a None only after looking for an adapter the slow way: it asks
# the type's protocol and the value itself, and each miss formats an
# AttributeError message. That was about 170 ns per None bound, and an audit
# row of an unmetered request holds seven; under load the usage writer spent
# 3% of the daemon's instructions on it. An adapter registered for NoneType is
# found in the module's registry first; returning None, it binds NULL as
# before. (Process-wide, like every sqlite3 adapter: identity, for anyone.)
sqlite3.register_adapter(type(None), _as_null)

migrations = Migrations("vaultd")


@migrations(name="0001_initial")
def _m0001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL
        );
        CREATE TABLE credentials (
            id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            hint TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            is_default INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            last_used_at INTEGER,
            use_count INTEGER NOT NULL DEFAULT 0,
            expires_at INTEGER,
            sealed BLOB NOT NULL,
            UNIQUE (service, name)
        );
        CREATE INDEX credentials_order ON credentials (created_at, id);
        -- At most one default per service, enforced by the database itself.
        CREATE UNIQUE INDEX credentials_one_default
            ON credentials (service) WHERE is_default = 1;
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_prefix TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            services TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_used_at INTEGER,
            expires_at INTEGER,
            revoked_at INTEGER
        );
        CREATE INDEX sessions_order ON sessions (created_at, id);
        """
    )


@migrations(name="0002_audit")
def _m0002_audit(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            request_id TEXT NOT NULL,
            session_id TEXT,
            credential_id TEXT,
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL,
            duration_ms REAL NOT NULL,
            bytes_in INTEGER NOT NULL,
            bytes_out INTEGER NOT NULL
        );
        -- One index only: every proxied request inserts a row, and the table
        -- is bounded ([audit] max_rows), so filtered reads may scan it.
        CREATE INDEX audit_at ON audit (at);
        """
    )


@migrations(name="0003_metering")
def _m0003_metering(db: Database) -> None:
    """Metering and limits (DESIGN 10).

    The counters a limit is checked against live on the rows they limit: a
    session's lifetime use on its row, a credential's per UTC day in
    ``credential_daily``. The audit table is bounded, so they cannot be
    summed from it. The daemon, the only one that proxies, is their only
    writer, and writes them behind with the audit rows.
    """
    db.executescript(
        """
        ALTER TABLE audit ADD COLUMN model TEXT;
        ALTER TABLE audit ADD COLUMN input_tokens INTEGER;
        ALTER TABLE audit ADD COLUMN output_tokens INTEGER;
        ALTER TABLE audit ADD COLUMN cached_input_tokens INTEGER;
        ALTER TABLE audit ADD COLUMN cost_usd REAL;
        -- Why vaultd refused the request before it went upstream (a problem
        -- slug, with the limit for limit-exceeded); NULL when it went.
        ALTER TABLE audit ADD COLUMN refusal TEXT;
        -- 1 when the answer ended before its usage was whole (counted as far
        -- as seen: a stream cut off, an event too large to read); 0 when whole.
        ALTER TABLE audit ADD COLUMN usage_partial INTEGER;
        ALTER TABLE sessions ADD COLUMN limits TEXT;
        ALTER TABLE sessions ADD COLUMN used_requests INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN used_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN used_cost_usd REAL NOT NULL DEFAULT 0;
        ALTER TABLE credentials ADD COLUMN limits TEXT;
        CREATE TABLE credential_daily (
            credential_id TEXT NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
            day INTEGER NOT NULL,  -- days since 1970-01-01, UTC
            requests INTEGER NOT NULL DEFAULT 0,
            tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (credential_id, day)
        ) WITHOUT ROWID;
        """
    )


@migrations(name="0004_policy")
def _m0004_policy(db: Database) -> None:
    """A session's request policy (DESIGN 11): the JSON its API shows, NULL for none."""
    db.execute("ALTER TABLE sessions ADD COLUMN policy TEXT")


@migrations(name="0005_remote_uses")
def _m0005_remote_uses(db: Database) -> None:
    """Last use and count of credentials a remote source holds (DESIGN 13): their
    metadata and secret stay at the source and in memory; their use is local."""
    db.execute(
        """
        CREATE TABLE remote_uses (
            id TEXT PRIMARY KEY,
            last_used_at INTEGER,
            use_count INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """
    )


def latest_migration() -> str:
    return migrations._migrations[-1].name


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    # Deleted rows (a removed ciphertext) are overwritten with zeros, not left
    # in free pages for a stolen copy of the file to recover.
    conn.execute("PRAGMA secure_delete = ON")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"the database could not switch to WAL mode (got {mode})")
    # Credential and session writes must survive a power cut once acknowledged.
    conn.execute("PRAGMA synchronous = FULL")


def connect(path: Path, *, create: bool = False) -> Database:
    """Open (or, with ``create``, make) the vault database and bring its schema up to date.

    Refuses a file that is not a SQLite database or whose schema comes from a
    newer vaultd, without writing to it.
    """
    if not path.exists():
        if not create:
            raise StorageError(f"no vault at {path}; create one with: vaultd init")
        # Made 0600 before SQLite opens it, whatever the process umask.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from None
    try:
        # Read the schema before any write so that a foreign or corrupt file
        # is refused untouched (switching to WAL would write to it).
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        _configure(conn)
        db = Database(conn, execute_plugins=False)
        _check_known_schema(db, path)
        if migrations.pending(db):
            migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"database {path} is corrupt or not a vaultd database ({exc})") from None
    except StorageError:
        conn.close()
        raise
    return db


def _check_known_schema(db: Database, path: Path) -> None:
    known = {m.name for m in migrations._migrations}
    applied = {m.name for m in migrations.applied(db)}
    unknown = applied - known
    if unknown:
        raise StorageError(
            f"database {path} has schema {max(unknown)} from a newer vaultd; upgrade vaultd"
        )
    tables = set(db.table_names())
    if not applied and tables - {migrations.migrations_table}:
        raise StorageError(f"database {path} is not a vaultd database (it has other tables)")


class _WriteTransaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front.

    A deferred transaction that reads and then writes can fail at once with
    "database is locked" when another process wrote in between (SQLite will not
    wait there, it would deadlock); taking the lock first makes it wait for
    ``busy_timeout`` instead, so concurrent CLI writers and the daemon queue up.
    """

    def __init__(self, db: Database) -> None:
        self.conn = db.conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def write_transaction(db: Database) -> _WriteTransaction:
    return _WriteTransaction(db)


# How long forget_replaced_pages waits for other connections' readers: short,
# because the daemon calls it on its event loop (an API delete or rotate).
_CHECKPOINT_WAIT_MS = 500


def forget_replaced_pages(db: Database) -> bool:
    """Checkpoint the WAL and truncate it to zero bytes; whether that was done.

    ``secure_delete`` zeroes what a delete or rotate freed in the database
    file, but while any other connection has the file open (the daemon, as a
    rule) SQLite keeps the WAL file, and the WAL still holds the earlier
    versions of the changed pages: the removed ciphertext, or the data key
    wrapped by a key file or passphrase just replaced. Truncating the WAL
    drops them. Best effort: a reader that stays in a transaction past the
    wait keeps the WAL until a later call or the daemon's next checkpoint.
    """
    conn = db.conn
    conn.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_WAIT_MS}")
    try:
        busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
    except sqlite3.OperationalError:
        busy = 1
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return busy == 0
