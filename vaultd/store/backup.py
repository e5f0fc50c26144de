"""Online backups of the vault database through SQLite's backup API.

The copy is consistent even while the daemon writes: SQLite copies pages
under a read transaction, and in WAL mode readers never block the writer. The
backup holds only ciphertext and the wrapped data key; it opens with the same
key file (or passphrase) as the vault it came from, so keep the two apart.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from vaultd.errors import StorageError
from vaultd.fsperms import create_private_file

# Pages copied per step: small steps let a concurrent writer interleave.
_PAGES_PER_STEP = 256


def backup_database(db: Database, target: Path) -> int:
    """Copy the open vault database ``db`` to a new 0600 file ``target``; its size in bytes.

    Refuses an existing ``target`` (a backup must never replace a file, least
    of all an older backup or the vault itself).
    """
    try:
        # Created 0600 (never over an existing file or through a link) before
        # SQLite opens it, whatever the umask.
        create_private_file(target, b"")
    except FileExistsError:
        raise StorageError(f"{target} already exists; a backup never overwrites a file") from None
    try:
        dest = sqlite3.connect(str(target))
        try:
            db.conn.backup(dest, pages=_PAGES_PER_STEP)
            # A self-contained file: a restore must not depend on a -wal beside it.
            dest.execute("PRAGMA journal_mode = DELETE")
            check = dest.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dest.close()
        if check != "ok":
            raise StorageError(f"the backup at {target} failed its integrity check: {check}")
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target.stat().st_size
