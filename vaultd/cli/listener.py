"""Who listens on a loopback port, as the kernel says: before a token is handed over (T2).

Anything can answer ``/healthz`` with ``{"status": "ok"}``. Another user who
binds vaultd's port while the daemon is stopped (or before it starts at
login) would receive every token, prompt and answer of the tools ``vaultd
run`` starts, and could feed them fake answers. The kernel knows which user
owns each listening socket (``/proc/net/tcp`` and ``tcp6``, the ``uid``
column), and no one can pose as another user there: so before a token is
minted for a child, every socket listening on the port at an address the
child may reach must be this user's.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

from vaultd.errors import VaultdError

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"  # TCP_LISTEN in the kernel's st column


class ListenerNotOurs(VaultdError):
    """Another user's process listens where vaultd should."""


class NoListener(VaultdError):
    """Nothing listens there (the daemon is not running), or no one can tell who does."""


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A ``/proc/net/tcp*`` address: 32-bit words in host byte order (little-endian here)."""
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listeners(port: int, tables: tuple[Path, ...] = _TABLES) -> Iterator[tuple[str, int]]:
    """``(address, uid)`` of every socket listening on ``port``, from the kernel's tables."""
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:
            continue  # no IPv6 on this kernel
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _LISTEN:
                continue
            hex_ip, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port:
                yield str(_address(hex_ip)), int(fields[7])


def _reachable(address: str, host: str) -> bool:
    """Whether a client connecting to ``host`` may reach a socket bound to ``address``."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:  # 0.0.0.0 or ::, every local address
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    if host == "localhost":
        return ip.is_loopback
    return ip == ipaddress.ip_address(host.strip("[]"))


def check_listener_is_ours(host: str, port: int) -> None:
    """Raise ``ListenerNotOurs`` unless every socket ``host``:``port`` may reach is ours.

    Fails closed: a port with no listener the kernel shows, or a kernel
    without the tables, is not a daemon known to be this user's.
    """
    if not Path("/proc/net/tcp").exists():
        raise NoListener(
            f"cannot tell who listens on {host}:{port} (no /proc/net/tcp); "
            "no token is handed to a process whose owner is unknown"
        )
    uid = os.getuid()
    found = [(a, owner) for a, owner in listeners(port) if _reachable(a, host)]
    if not found:
        raise NoListener(f"nothing listens on {host}:{port}")
    strangers = sorted({owner for _, owner in found if owner != uid})
    if strangers:
        raise ListenerNotOurs(
            f"refusing to hand a token to {host}:{port}: the process listening there runs as "
            f"uid {', '.join(map(str, strangers))}, not as you (uid {uid}); "
            "another user may be squatting vaultd's port"
        )
