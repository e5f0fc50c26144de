"""Whether the database changed, without a query: SQLite's WAL-index header.

Every commit to a database in WAL mode, by any connection in any process,
rewrites the WAL-index header at the start of the ``-shm`` file (SQLite's
documented file format, https://www.sqlite.org/walformat.html section 2.1:
a counter bumped by each transaction, the last valid frame, checksums). The
proxy asks "did anything change?" before every request (``proxycache.py``),
and reading those 48 bytes from a shared mapping of the file is a memory
copy, where ``PRAGMA data_version`` takes a WAL read lock (two ``fcntl``
system calls) through the sqlite3 module's statement machinery: a few
percent of a proxied request's CPU.

Why this is as exact as ``data_version``:

* The header is rewritten before the writer's commit returns, so a change
  committed before a request was sent is in the header when the daemon,
  having received that request, reads it.
* Any commit changes the bytes (the counter and the checksums); bytes that
  change for another reason (a checkpoint restarting the WAL, recovery after
  a crash) only cost a refilled cache.
* The ``-shm`` file is deleted or truncated only by a connection that finds
  itself the last one to the database; the daemon keeps its own connection
  open for as long as this watch exists, so the mapping always shows the
  file SQLite itself uses.

Where the file cannot be mapped (the database not in WAL mode, a VFS
without it, an unreadable file), ``PRAGMA data_version`` answers instead.
"""

from __future__ import annotations

import logging
import mmap
import os
import sqlite3
from pathlib import Path

log = logging.getLogger("vaultd.db")

# The first copy of the WAL-index header (walformat.html 2.1).
HEADER_BYTES = 48


class ChangeWatch:
    """``stamp()`` differs from its previous value whenever the database changed since."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path) -> None:
        self._conn = conn
        # Kept for the fallback: ``conn.execute`` would make (and drop) a
        # cursor each time. ``fetchone`` of this one-row pragma steps it to
        # its end, so no read transaction stays open between calls.
        self._version = conn.cursor()
        self._header = _map_header(conn, db_path)

    @property
    def reads_header(self) -> bool:
        """Whether the WAL-index header is read (else ``PRAGMA data_version`` is asked)."""
        return self._header is not None

    def stamp(self) -> object:
        header = self._header
        if header is not None:
            # The connection's own uncommitted changes are not in the header.
            return (header[:HEADER_BYTES], self._conn.total_changes)
        return (
            self._version.execute("PRAGMA data_version").fetchone()[0],
            self._conn.total_changes,
        )


def _map_header(conn: sqlite3.Connection, db_path: Path) -> mmap.mmap | None:
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            return None
        # A read builds the WAL index (the -shm file's content) if no
        # connection has yet.
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        fd = os.open(f"{db_path}-shm", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_size < HEADER_BYTES:
                return None
            return mmap.mmap(fd, HEADER_BYTES, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
    except (OSError, ValueError, sqlite3.Error) as exc:
        log.info("watching the database with PRAGMA data_version (%s)", exc.__class__.__name__)
        return None
