"""Run a command confined by a ``Plan``: bubblewrap inside a Landlock scope, and the relay.

The command runs only once every piece is in place: bubblewrap reports the
sandboxed child's pid on its status pipe after its mounts are made (no pid:
the sandbox failed, and nothing ran), and with ``--net proxy-only`` the
relay's socket must arrive before the command is let go (``inner`` holds it
until then).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from vaultd.isolation import bridge
from vaultd.isolation.bubblewrap import command_line, hidden_files
from vaultd.isolation.check import NOT_INSTALLED, trusted_bwrap
from vaultd.isolation.plan import IsolationUnavailable, Plan
from vaultd.isolation.scope import scoped_ruleset

INNER = str(Path(__file__).with_name("inner.py"))
START_TIMEOUT = 10
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _tiocsti_allowed() -> bool:
    """Whether a process may push keystrokes into its terminal (off from Linux 6.2 on
    where dev.tty.legacy_tiocsti = 0): then the command needs a session of its own."""
    try:
        return Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip() != "0"
    except OSError:
        return True


# Variables that name a way to an unconfined process (the sockets are hidden;
# their names need not go in either).
DROPPED = frozenset({"TMUX", "TMUX_PANE", "STY", "DBUS_SESSION_BUS_ADDRESS"})


def confined_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without vaultd's own variables (a passphrase file's path, say) and
    those that name the session's sockets."""
    return {k: v for k, v in env.items() if not k.startswith("VAULTD_") and k not in DROPPED}


def run_confined(plan: Plan, command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` as ``plan`` says; its exit status (128 + signal if killed)."""
    bwrap = trusted_bwrap(env.get("PATH", os.defpath))
    if bwrap is None:
        raise IsolationUnavailable(NOT_INSTALLED)
    try:
        ruleset = scoped_ruleset()
    except Exception as exc:  # landlockpy's errors: refuse, never run unconfined
        raise IsolationUnavailable(f"Landlock cannot scope the command ({exc})") from None
    child_env = confined_env(env)
    empties = [os.open(os.devnull, os.O_RDONLY) for _ in hidden_files(plan)]
    status_read, status_write = os.pipe()
    inherited = [*empties, status_write]
    control: tuple[socket.socket, socket.socket] | None = None
    argv = list(command)
    if plan.proxy is not None:
        control = socket.socketpair()
        inherited.append(control[1].fileno())
        host, port = plan.proxy
        argv = [
            sys.executable,
            "-I",
            "-S",
            INNER,
            str(control[1].fileno()),
            host,
            str(port),
            "--",
            *argv,
        ]
    root = os.geteuid() == 0
    full = command_line(
        bwrap,
        plan,
        argv,
        empty_fds=empties,
        status_fd=status_write,
        root=root,
        new_session=_tiocsti_allowed(),
    )
    try:
        sandbox = subprocess.Popen(  # noqa: S603 - the user's command, confined
            full,
            env=child_env,
            pass_fds=tuple(inherited),
            preexec_fn=ruleset.restrict,
        )
    except subprocess.SubprocessError as exc:
        raise IsolationUnavailable(f"the command could not be confined ({exc})") from None
    finally:
        for fd in inherited:
            os.close(fd)
        if control is not None:
            control[1].detach()  # its descriptor was just closed
    with os.fdopen(status_read, "rb") as status:
        if not _child_started(status):
            code = sandbox.wait()
            raise IsolationUnavailable(
                f"bubblewrap could not set up the sandbox (exit status {code}); the command "
                "did not run"
            )
        if control is not None:
            assert plan.proxy is not None
            listener = bridge.receive_listener(control[0], START_TIMEOUT)
            control[0].close()
            if listener is None:
                sandbox.kill()
                sandbox.wait()
                raise IsolationUnavailable(
                    "--net proxy-only: the relay to the daemon did not start; the command did "
                    "not run"
                )
            bridge.serve(listener, plan.proxy)
        code = _wait(sandbox)
        status.read()  # bwrap's last line: the exit code, which wait() has too
    return 128 - code if code < 0 else code


def _child_started(status: object) -> bool:
    """Whether bwrap says it started the child (its first JSON line, ``child-pid``)."""
    line = status.readline()  # type: ignore[attr-defined]
    if not line:
        return False
    try:
        return "child-pid" in json.loads(line)
    except ValueError:
        return False


def _wait(sandbox: subprocess.Popen[bytes]) -> int:
    """Its exit status, passing our signals on (the terminal's go to us alone when
    the command has a session of its own)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        sandbox.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        return sandbox.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
