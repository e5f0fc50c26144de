"""One daemon per vault: an advisory lock on a file in the data directory.

The port usually tells a second ``vaultd serve`` that one is running, but
not when the two were given different ports; the lock does, whatever the
port. The kernel drops the lock when the process dies, however it dies, so a
stale file never blocks a start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from vaultd.errors import VaultdError

LOCK_FILE_NAME = "serve.lock"


class AlreadyRunning(VaultdError):
    status = 409
    slug = "already-running"
    title = "Already running"


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise AlreadyRunning(
                f"another vaultd is already serving the vault in {self.path.parent}{pid}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        # Not unlinked: removing the file would race with a starting instance
        # that has opened it but not locked it yet.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
