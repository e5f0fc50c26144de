"""``vaultd run``: a command that sees proxy URLs and a session token, never a key.

Kept free of aiohttp: the daemon is asked one question (``/healthz``) with the
standard library, and the token is minted in the database directly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from types import FrameType

from vaultd.cli.listener import NoListener, check_listener_is_ours
from vaultd.errors import VaultdError
from vaultd.services import Service

DEFAULT_URL = "http://127.0.0.1:3978"


class DaemonUnreachable(VaultdError):
    pass


def daemon_url(env: Mapping[str, str]) -> str:
    url = env.get("VAULTD_URL", DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")) or not url.isprintable():
        raise DaemonUnreachable(f"VAULTD_URL must be an http:// URL, not {url!r}")
    return url


def check_daemon(url: str, timeout: float = 3.0) -> str:
    """The daemon's version, or ``DaemonUnreachable`` with what to do about it.

    Only a daemon of this user's is one: the kernel must show that every
    socket listening where ``url`` points belongs to this user
    (``listener.check_listener_is_ours``; ``ListenerNotOurs`` otherwise), both
    before it is asked anything and after it answered.
    """
    host, port = _loopback_address(url)
    _check_owner(url, host, port)
    # No proxy handler: a loopback request must not detour through HTTP_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/healthz", timeout=timeout) as reply:
            body = json.loads(reply.read(4096))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonUnreachable(
            f"the vaultd daemon is not reachable at {url} ({reason}); start it with: vaultd serve"
        ) from None
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise DaemonUnreachable(f"{url} did not answer like a vaultd daemon")
    # Whoever answered was listening then: still only this user's sockets.
    _check_owner(url, host, port)
    return str(body.get("version", "?"))


def _loopback_address(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must name this machine's loopback."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DaemonUnreachable(f"VAULTD_URL has no valid port: {url!r}") from None
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise DaemonUnreachable(
            f"VAULTD_URL must name this machine (127.0.0.1, localhost or [::1]), not {host!r}:"
            " a token is handed only to a daemon the kernel shows is yours"
        )
    return host, port


def _check_owner(url: str, host: str, port: int) -> None:
    try:
        check_listener_is_ours(host, port)
    except NoListener as exc:
        raise DaemonUnreachable(
            f"the vaultd daemon is not reachable at {url} ({exc}); start it with: vaultd serve"
        ) from None


def child_env(
    base: Mapping[str, str], url: str, token: str, services: Sequence[Service]
) -> dict[str, str]:
    """``base`` plus each service's key and base-URL variables pointing at the proxy."""
    env = dict(base)
    for service in services:
        if service.env_key:
            env[service.env_key] = token
        if service.env_base_url:
            env[service.env_base_url] = f"{url}/proxy/{service.name}{service.env_base_suffix}"
    return env


def base_url_warnings(url: str, services: Sequence[Service]) -> list[str]:
    """A line for each service whose token variable is set but no base-URL variable.

    Its SDK (``gh``, ``GEMINI_API_KEY`` users...) would send the token to the
    real API, where it is useless but still should not go: the user must point
    the tool at the proxy by hand.
    """
    return [
        f"vaultd run: {s.name} has no base-URL variable; point the tool at "
        f"{url}/proxy/{s.name} yourself, or it sends ${s.env_key} to {s.base_url}"
        for s in services
        if s.env_key and not s.env_base_url
    ]


def _terminal_sends_sigint_to_child() -> bool:
    """Whether a Ctrl-C at the terminal reaches the child by itself.

    The child shares our process group; when that group is the terminal's
    foreground group, the kernel delivers Ctrl-C to both, and forwarding it
    again would interrupt the child twice.
    """
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``argv``; forward SIGTERM/SIGHUP (and SIGINT unless the terminal did); its status."""
    try:
        child = subprocess.Popen(list(argv), env=dict(env))  # noqa: S603 - the user's command
    except FileNotFoundError:
        raise VaultdError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise VaultdError(f"permission denied: {argv[0]}") from None

    forward_sigint = not _terminal_sends_sigint_to_child()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and not forward_sigint:
            return
        child.send_signal(signum)

    previous = {
        s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # A child killed by a signal exits like a shell reports it: 128 + signal.
    return 128 - code if code < 0 else code
