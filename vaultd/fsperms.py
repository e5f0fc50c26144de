"""Files and directories that only their owner may touch (threat T2).

vaultd creates its directories 0700 and its files 0600, and refuses at start
to use any that another user could read or that another user owns.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from vaultd.errors import UnsafePermissions


def unsafe_reason(kind: str, path: Path, st: os.stat_result) -> str | None:
    """Why another user could reach ``path`` (with the ``chmod`` that fixes it), or None."""
    if st.st_uid != os.getuid():
        return f"{kind} {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        want = "700" if stat.S_ISDIR(st.st_mode) else "600"
        return (
            f"{kind} {path} is open to group/other (mode {mode:o}); "
            f"fix it with: chmod {want} {path}"
        )
    return None


def check_private(path: Path, kind: str) -> None:
    """Raise ``UnsafePermissions`` unless ``path`` is ours and closed to group/other."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    problem = unsafe_reason(kind, path, st)
    if problem:
        raise UnsafePermissions(problem)


def ensure_private_dir(path: Path, kind: str) -> None:
    """Create ``path`` (and missing parents) as 0700, then check it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        # Created meanwhile by a concurrent vaultd process: checked below all the same.
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    check_private(path, kind)


def create_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file; never replaces an existing one.

    O_EXCL makes "never overwrite a key" hold even against a race with a second
    ``vaultd init``; O_NOFOLLOW refuses a planted symlink.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
