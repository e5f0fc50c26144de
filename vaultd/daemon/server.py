"""``vaultd serve``: run the API on a TCP port until SIGTERM or SIGINT.

Start-up failures a user can cause (a taken port, a second daemon on the same
vault, a wrong key, unsafe permissions) are one ``Error:`` line on stderr and
a return value of 1; a signal drains requests in flight, bounded by
``DRAIN_TIMEOUT``, and returns 0. SIGHUP reloads the config (``reload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from aiohttp import web

from vaultd.config import Config, load_config
from vaultd.daemon.app import create_app
from vaultd.daemon.reload import reload_app
from vaultd.daemon.runners import daemon_runner
from vaultd.daemon.sdnotify import notify
from vaultd.errors import VaultdError
from vaultd.fsperms import ensure_private_dir
from vaultd.hardening import harden_process
from vaultd.http import fastpaths
from vaultd.services import is_loopback_host
from vaultd.store.daemon_lock import InstanceLock
from vaultd.tokens import redact

log = logging.getLogger("vaultd")
DRAIN_TIMEOUT = 10.0
SD_LISTEN_FDS_START = 3  # <systemd/sd-daemon.h>


def systemd_socket(env: dict[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed (socket activation), else None.

    Only if ``LISTEN_PID`` names this process (the variables are inherited by
    children, which must not take the socket too); the variables are then
    removed, as ``sd_listen_fds(1)`` does.
    """
    environ = os.environ if env is None else env
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = environ.get("LISTEN_FDS", "")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(var, None)
    if not count.isdigit() or int(count) < 1:
        return None
    if int(count) > 1:
        raise VaultdError(f"systemd passed {count} sockets; vaultd.socket must listen on one")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise VaultdError("the socket systemd passed is not a listening TCP socket")
    os.set_inheritable(sock.fileno(), False)
    return sock


class RedactingFormatter(logging.Formatter):
    """Last line of defence: no token-shaped text reaches stderr, from any logger."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging() -> None:
    root = logging.getLogger()
    if root.handlers:
        return  # the embedding program (or a test) has its own
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _fail(message: str) -> int:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    return 1


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {_display(host, port)}"
    if isinstance(exc, socket.gaierror):
        return f"{where}: unknown host {host!r}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use (is another vaultd running?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: this machine has no such address"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied"
    return f"{where}: {exc.strerror or exc}"


async def run_app(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    drain_timeout: float = DRAIN_TIMEOUT,
    on_ready: Callable[[list[int]], None] | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Serve ``app`` until ``stop`` is set, then drain; 1 if it could not start.

    ``on_ready`` receives the bound ports once listening (useful with port 0).
    With ``sock`` (socket activation) it serves on that socket instead of binding.
    """
    if sock is not None:
        host, port = sock.getsockname()[:2]
    if not is_loopback_host(host):
        log.warning(
            "LISTENING ON %s, NOT LOOPBACK: other machines can reach this vault's API. "
            "Every request still needs a token and an allowed Host.",
            host,
        )
    runner = daemon_runner(app, shutdown_timeout=drain_timeout)
    try:
        await runner.setup()  # runs the app's startup: opens (or creates) the vault
    except (VaultdError, OSError) as exc:
        await runner.cleanup()
        return _fail(str(exc) if isinstance(exc, VaultdError) else f"cannot start: {exc}")
    site: web.BaseSite = (
        web.TCPSite(runner, host, port) if sock is None else web.SockSite(runner, sock)
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        return _fail(_bind_error(host, port, exc))
    ports = sorted({address[1] for address in runner.addresses})
    bound = ", ".join(f"http://{_display(host, p)}" for p in ports)
    log.info(
        "listening on %s (aiohttp fast paths: %s; proxied calls: %s)",
        bound,
        fastpaths.summary() or "none",
        "direct" if runner.direct else "through the app",
    )
    notify(f"READY=1\nSTATUS=listening on {bound}")
    if on_ready is not None:
        on_ready(ports)
    await stop.wait()
    log.info("stopping: finishing requests in flight (at most %gs)", drain_timeout)
    notify("STOPPING=1")
    # Closes the listening socket first, then waits for handlers, then the vault.
    await runner.cleanup()
    log.info("stopped")
    return 0


async def _until_signal(
    app: web.Application, host: str, port: int, sock: socket.socket | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    # Its default action would end the daemon (exit 129).
    loop.add_signal_handler(signal.SIGHUP, reload_app, app)
    try:
        return await run_app(app, host, port, stop, sock=sock)
    finally:
        for sig in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# CPython collects its youngest generation every 700 net allocations of
# container objects. A proxied request makes a few hundred that live until
# its answer is sent, so under load a collection came every few requests,
# found the objects of all requests in flight alive, and promoted them into
# the older generations, whose collections then walked them again: about a
# tenth of the proxy's CPU in bench/proxy_bench.py. Collections still find
# reference cycles; in-flight requests are mostly done before the next one.
YOUNG_GENERATION_THRESHOLD = 10_000


def serve(config: Config, host: str | None = None, port: int | None = None) -> int:
    """Run the daemon in the foreground; the process exit code."""
    # Whatever the daemon creates (database, WAL, lock) is private to the user.
    os.umask(0o077)
    harden_process()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    configure_logging()
    bind_host = config.host if host is None else host
    bind_port = config.port if port is None else port
    lock = InstanceLock(config.data_dir)
    try:
        # Socket activation (systemd/vaultd.socket): the socket replaces --host/--port.
        sock = systemd_socket()
        fastpaths.allowed()  # a wrong VAULTD_FAST_PATHS is one line, before anything starts
        app = create_app(config)
        # A fresh machine has no data dir yet: the lock lives in it.
        ensure_private_dir(config.data_dir, "data directory")
        lock.acquire()
    except VaultdError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot use the data directory {config.data_dir}: {exc.strerror or exc}")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_until_signal(app, bind_host, bind_port, sock))
    finally:
        lock.release()


def finish(code: int) -> NoReturn:
    """End the process that ran ``serve`` with status ``code``.

    After a clean stop (0) everything that must outlive the process is
    already written and closed: usage flushed, the vault closed, the lock let
    go; here the log's and the standard streams' buffers are flushed too.
    What a normal interpreter exit would still do changes nothing outside
    the process, and all of the time between the "stopped" line and the exit
    went to it: freeing every object of every module one by one, atexit
    hooks, and joining the threads libraries leave behind (the workers of
    uvloop's libuv threadpool are joined from a library destructor, which
    waits for any work item still running, a name lookup say). So it is
    skipped (``os._exit``). Any other status exits normally.
    """
    if code != 0:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed or vanished stream: nothing more can be said on it.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


def main() -> int:
    """``python -m vaultd.daemon.server``: config from $VAULTD_CONFIG / $VAULTD_DATA_DIR."""
    try:
        config = load_config()
    except VaultdError as exc:
        return _fail(str(exc))
    return serve(config)


if __name__ == "__main__":
    finish(main())
