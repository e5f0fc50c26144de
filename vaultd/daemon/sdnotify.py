"""systemd's readiness protocol (``Type=notify``) in a few lines, no dependency.

The service manager passes a Unix datagram socket in ``$NOTIFY_SOCKET``: a
path, or an abstract name written with a leading ``@``. We send ``READY=1``
once listening and ``STOPPING=1`` when draining (sd_notify(3)).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("vaultd")


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to the service manager; ``False`` if there is none or it failed."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        target = "\0" + address[1:]  # the Linux abstract namespace
    elif address.startswith("/"):
        target = address
    else:
        # Unset, or a transport we do not speak (vsock): nothing to tell.
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        # Not fatal: the daemon works, only the manager will not hear of it.
        log.warning("could not notify the service manager: %s", exc.strerror or exc)
        return False
    return True
