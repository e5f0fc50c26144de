"""Process hardening for the daemon, which holds the data key in memory (DESIGN 4).

No core dumps (a crash must not write the key to disk) and not dumpable
(which also stops other same-user processes from ptrace-attaching, unless
they are privileged). Both are best effort: vaultd still runs where a
platform lacks them, e.g. prctl outside Linux.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys

log = logging.getLogger("vaultd")

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def harden_process() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        log.warning("could not disable core dumps: %s", exc)
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not mark the process non-dumpable (errno %d)", ctypes.get_errno())
