"""``vaultd run``: a command that sees proxy URLs and a session token, never a key.

Kept free of aiohttp: the daemon is asked (``/healthz``, ``/api/daemon``) with
the standard library, and the token is minted in the database directly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from sqlite_utils import Database

from vaultd.cli.listener import NoListener, check_listener_is_ours
from vaultd.config import DEFAULT_PORT, Config
from vaultd.core.sessions import SessionStore
from vaultd.errors import VaultdError
from vaultd.services import Service

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
# How to have a running daemon read its config again (README, "Changing the config").
RELOAD_HINT = "systemctl --user reload vaultd, or kill -HUP the daemon's pid"


class DaemonUnreachable(VaultdError):
    pass


def daemon_url(env: Mapping[str, str], config: Config | None = None) -> str:
    """Where clients find the daemon: ``VAULTD_URL``, else ``config``'s [server]
    host and port (without a config: ``DEFAULT_URL``)."""
    given = env.get("VAULTD_URL", "")
    if not given:
        return DEFAULT_URL if config is None else _config_url(config)
    url = given.rstrip("/")
    if not url.startswith(("http://", "https://")) or not url.isprintable():
        raise DaemonUnreachable(f"VAULTD_URL must be an http:// URL, not {url!r}")
    return url


def _config_url(config: Config) -> str:
    """``http://HOST:PORT`` of the daemon ``config`` describes, reached on loopback."""
    if config.port == 0:
        raise DaemonUnreachable(
            "[server] port is 0 (any free port), so clients cannot tell where the daemon "
            'listens: set VAULTD_URL to the address its log shows ("listening on ...")'
        )
    host = config.host
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        # Listening on every address, loopback among them.
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    if (ip is not None and not ip.is_loopback) or (ip is None and host.lower() != "localhost"):
        raise DaemonUnreachable(
            f"[server] host {host!r} is not a loopback address, and a token is handed only "
            "to a daemon on this machine's loopback: listen on 127.0.0.1, or set VAULTD_URL"
        )
    name = host if ip is None else (f"[{ip}]" if ip.version == 6 else str(ip))
    return f"http://{name}:{config.port}"


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


@contextlib.contextmanager
def read_token(db: Database, services: Mapping[str, Service], name: str) -> Iterator[str]:
    """A ``read`` token for a minute, made in the vault ``db`` and revoked when done
    (the daemon prunes it later, with the others)."""
    sessions = SessionStore(db)
    session, token = sessions.create(
        name=name, scopes=["read"], services=["*"], ttl=60, known_services=services
    )
    try:
        yield token
    finally:
        sessions.revoke(session.id)


def daemon_get(url: str, token: str, path: str, *, timeout: float, limit: int) -> Any:
    """``GET path`` of the daemon at ``url`` (which passed ``check_daemon``) with
    ``token``: its JSON, read to at most ``limit`` bytes. An error status is the
    caller's ``urllib.error.HTTPError``; no answer, ``DaemonUnreachable``."""
    # No proxy handler: a loopback request must not detour through HTTP_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 - url passed check_daemon: loopback http
        f"{url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with opener.open(request, timeout=timeout) as reply:
            return json.loads(reply.read(limit))
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonUnreachable(f"the vaultd daemon at {url} did not answer ({reason})") from None


@dataclass(frozen=True)
class DaemonView:
    """What ``GET /api/daemon`` says: the daemon's version, the services it has that
    the token may use, and (for a ``read`` token) its config's digest and the keys
    a reload could not apply."""

    version: str
    services: tuple[str, ...]
    config_digest: str | None
    pending_restart: tuple[str, ...]


def daemon_view(url: str, token: str, timeout: float = 3.0) -> DaemonView | None:
    """``GET /api/daemon`` with ``token`` (any scope); None from a daemon too old to have it.

    The daemon at ``url`` must already have passed ``check_daemon``. A daemon
    that does not know the token, just minted in this vault, serves another one.
    """
    try:
        body = daemon_get(url, token, "/api/daemon", timeout=timeout, limit=1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if exc.code == 401:
            raise VaultdError(
                f"the daemon at {url} does not know a token made in this vault: it serves "
                "another one (a different --data-dir or [storage] data_dir)"
            ) from None
        raise VaultdError(f"the daemon at {url} answered {exc.code} to GET /api/daemon") from None
    try:
        return DaemonView(
            version=str(body["version"]),
            services=tuple(str(name) for name in body["services"]),
            config_digest=None if body["config_digest"] is None else str(body["config_digest"]),
            pending_restart=tuple(str(key) for key in body["pending_restart"] or ()),
        )
    except (KeyError, TypeError):
        raise VaultdError(f"{url} did not answer GET /api/daemon like a vaultd daemon") from None


def check_daemon_services(url: str, token: str, services: Sequence[str]) -> None:
    """Refuse (``VaultdError``) if the daemon at ``url`` lacks one of ``services``.

    ``token`` is the session ``vaultd run`` made for its command (a proxy
    scope is enough). The config the CLI read may be newer than the one the
    daemon runs with: a command given a token for a service the daemon does
    not have would only get 404s. A daemon too old to say is not asked.
    """
    view = daemon_view(url, token)
    if view is None:
        return
    missing = [name for name in services if name not in view.services]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise VaultdError(
            f"the daemon has no service {names} (added to the config since it last read "
            f"it?): reload it ({RELOAD_HINT}) and run again"
        )


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
    base: Mapping[str, str],
    url: str,
    token: str,
    services: Sequence[Service],
    known: Iterable[Service] = (),
) -> tuple[dict[str, str], list[str]]:
    """``base`` plus each service's key and base-URL variables pointing at the proxy,
    and the names of the variables taken out of it.

    Those are the token variables of the ``known`` services that ``services``
    do not set: a real key the parent holds (``ANTHROPIC_API_KEY`` in the
    shell's profile) would otherwise reach the command beside the token,
    which is what ``run`` exists to prevent.
    """
    env = dict(base)
    env.update(proxy_vars(url, token, services))
    removed = [name for name in withheld(services, known) if name in env]
    for name in removed:
        del env[name]
    return env, removed


def proxy_vars(url: str, token: str, services: Sequence[Service]) -> dict[str, str]:
    """Each service's token variable set to ``token`` and base-URL variable to the proxy."""
    env: dict[str, str] = {}
    for service in services:
        if service.env_key:
            env[service.env_key] = token
        if service.env_base_url:
            env[service.env_base_url] = f"{url}/proxy/{service.name}{service.env_base_suffix}"
    return env


def withheld(services: Sequence[Service], known: Iterable[Service]) -> list[str]:
    """The token variables of the ``known`` services that ``services`` do not set, sorted:
    the ones a command given a session for ``services`` must not inherit."""
    ours = {service.env_key for service in services if service.env_key}
    return sorted({s.env_key for s in known if s.env_key and s.env_key not in ours})


def unset_notice(
    names: Sequence[str], verb: str = "run", doing: str = "not passing on"
) -> str | None:
    """The one line saying which of the parent's token variables the command does not get."""
    if not names:
        return None
    return (
        f"vaultd {verb}: {doing} {', '.join(names)} (keys of services this session "
        "does not cover; add them with vaultd add, or name their service with --service)"
    )


def run_name(command: Sequence[str]) -> str:
    """The session's name for ``command``: ``run: `` and its first two words at most.

    Only these: arguments may hold secrets (``mysql -pSECRET``, a URL with a
    token), and session names are shown by ``session list`` and the audit log.
    For the same reason the second word is left out where it could carry a
    value (``=``, ``:``, ``@``, an option longer than ``-x``), or could be a
    key itself (long, or letters and digits with no dot); of a path, only
    its last part.
    """
    words = [os.path.basename(command[0].rstrip("/")) or command[0]]
    if len(command) > 1:
        second = command[1]
        if not set("=:@") & set(second) and (not second.startswith("-") or len(second) <= 2):
            word = os.path.basename(second.rstrip("/")) or second
            if word and len(word) <= MAX_NAME_WORD and not _looks_random(word):
                words.append(word)
    name = "run: " + " ".join(word[:MAX_NAME_WORD] for word in words)
    # A name is printable text: a newline in argv must not forge a listing's line.
    return "".join(c if c.isprintable() else "?" for c in name)[:255]


# The longest word of a command line a session's name takes: keys are longer
# (a GitHub token is 40 characters, an OpenAI key over 100).
MAX_NAME_WORD = 32


def _looks_random(word: str) -> bool:
    """Letters and digits mixed, 16 or more, and no dot: more like a key or a
    password than a subcommand (``run``, ``lab``) or a file (``train.py``)."""
    return (
        len(word) >= 16
        and "." not in word
        and any(c.isdigit() for c in word)
        and any(c.isalpha() for c in word)
    )


def base_url_warnings(url: str, services: Sequence[Service], verb: str = "run") -> list[str]:
    """A line for each service whose token variable is set but no base-URL variable.

    Its SDK (``gh``, ``GEMINI_API_KEY`` users...) would send the token to the
    real API, where it is useless but still should not go: the user must point
    the tool at the proxy by hand.
    """
    return [
        f"vaultd {verb}: {s.name} has no base-URL variable; point the tool at "
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


# How a shell reports a command it cannot find, and one it found but cannot run.
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126


class CommandNotRun(VaultdError):
    """The command did not start; ``exit_code`` is what a shell would exit with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_command(name: str, env: Mapping[str, str]) -> None:
    """Refuse (``CommandNotRun``, 127 or 126) a command that could not be started.

    Asked before anything is minted, as a shell would look: a name with a
    ``/`` is a path, any other is looked for on ``env``'s ``PATH``, where a
    match that is not executable counts only if no later one is.
    """
    if "/" in name:
        if not os.path.exists(name):
            raise CommandNotRun(f"command not found: {name}", EXIT_NOT_FOUND)
        if os.path.isdir(name):
            raise CommandNotRun(f"cannot run {name}: is a directory", EXIT_CANNOT_RUN)
        if not os.access(name, os.X_OK):
            raise CommandNotRun(f"cannot run {name}: permission denied", EXIT_CANNOT_RUN)
        return
    path = env.get("PATH", os.defpath)
    files = [os.path.join(d or ".", name) for d in path.split(os.pathsep)] if name else []
    files = [f for f in files if os.path.isfile(f)]
    if any(os.access(f, os.X_OK) for f in files):
        return
    if files:
        raise CommandNotRun(f"cannot run {name}: permission denied", EXIT_CANNOT_RUN)
    raise CommandNotRun(f"command not found: {name}", EXIT_NOT_FOUND)


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``argv``; forward SIGTERM/SIGHUP (and SIGINT unless the terminal did); its status."""
    try:
        child = subprocess.Popen(list(argv), env=dict(env))  # noqa: S603 - the user's command
    except FileNotFoundError:
        raise CommandNotRun(f"command not found: {argv[0]}", EXIT_NOT_FOUND) from None
    except OSError as exc:
        # EACCES, ENOEXEC, EISDIR...: found, but not something that runs.
        reason = (exc.strerror or str(exc)).lower()
        raise CommandNotRun(f"cannot run {argv[0]}: {reason}", EXIT_CANNOT_RUN) from None

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
