"""Online backups of the vault database through SQLite's backup API.

The copy is consistent even while the daemon writes: SQLite copies pages
under a read transaction, and in WAL mode readers never block the writer. The
backup holds only ciphertext and the wrapped data key; it opens with the same
key file (or passphrase) as the vault it came from, so keep the two apart.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
from pathlib import Path

from sqlite_utils import Database

from vaultd.errors import StorageError

# Pages copied per step: small steps let a concurrent writer interleave.
_PAGES_PER_STEP = 256


def backup_database(db: Database, target: Path) -> int:
    """Copy the open vault database ``db`` to a new 0600 file ``target``; its size in bytes.

    Refuses an existing ``target`` (a backup must never replace a file, least
    of all an older backup or the vault itself), and a directory in which
    another user could replace the file between its creation and SQLite
    opening it by name (see ``_others_can_replace_in``); checks afterwards
    that the file SQLite wrote is still the one created.
    """
    _check_directory(target.parent)
    reason = _others_can_replace_in(target.absolute().parent)
    if reason is not None:
        raise StorageError(reason)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Created 0600, never over an existing file or through a link,
        # whatever the umask, before SQLite opens it.
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise StorageError(f"{target} already exists; a backup never overwrites a file") from None
    try:
        created = os.fstat(fd)
        try:
            _copy(db, target)
            _check_still_ours(target, created)
            os.fsync(fd)
        except BaseException:
            if _is_file(target, created):
                target.unlink()  # ours, half-written: never leave it for a restore
            raise
    finally:
        os.close(fd)
    return target.stat().st_size


def _check_directory(directory: Path) -> None:
    """The directory the backup goes in exists; a backup never makes one.

    Said here, naming the directory: SQLite or ``open`` would name the file,
    as if the file were what is missing.
    """
    not_one = StorageError(f"{directory} is not a directory; back up into one")
    try:
        st = directory.stat()
    except FileNotFoundError:
        raise StorageError(
            f"the directory {directory} does not exist; create it first "
            f"(mkdir -p {shlex.quote(str(directory))}) or back up elsewhere"
        ) from None
    except NotADirectoryError:  # a file where a directory on the way should be
        raise not_one from None
    if not stat.S_ISDIR(st.st_mode):
        raise not_one


def _copy(db: Database, target: Path) -> None:
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


def _others_can_replace_in(directory: Path) -> str | None:
    """Why another user could swap a file of ours in ``directory`` for theirs, or None.

    SQLite opens the backup by name. In a directory that others can write and
    that has no sticky bit (``/tmp`` has one), they can rename their own file
    over ours in between and receive the backup, or edit it before a
    restore; a directory's owner can do that anywhere in it.
    """
    st = directory.stat()
    if st.st_uid not in (os.getuid(), 0):
        return (
            f"{directory} belongs to uid {st.st_uid}, who could replace the backup in it;"
            " back up into a directory of yours"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(st.st_mode)
        return (
            f"others can write to {directory} (mode {mode:o}, no sticky bit) and could replace"
            " the backup in it; back up into a directory only you can write"
        )
    return None


def _is_file(path: Path, created: os.stat_result) -> bool:
    try:
        now = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (created.st_dev, created.st_ino)


def _check_still_ours(target: Path, created: os.stat_result) -> None:
    """The name still holds the file created for the backup, private to us."""
    now = target.stat(follow_symlinks=False)
    if (
        (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino)
        or not stat.S_ISREG(now.st_mode)
        or now.st_uid != os.getuid()
        or now.st_mode & 0o077
    ):
        raise StorageError(
            f"{target} was replaced while the backup was written: the file there now is not"
            " the backup and was left as it is; back up into a directory only you can write"
        )
