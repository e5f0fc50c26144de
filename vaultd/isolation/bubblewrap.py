"""The bubblewrap command line that carries out a ``Plan`` (pure: argv in, argv out).

bubblewrap (``bwrap``, from the distribution) makes the namespaces and mounts
without privileges, and is what Flatpak confines applications with: the least
code of ours for the most tested confinement. Its options, by what they keep:

- ``--unshare-pid``: the daemon and ``vaultd run`` are not in the child's
  ``/proc``, so their memory, environment and signals are out of its reach;
- ``--unshare-user --disable-userns --cap-drop ALL``: no capability at all,
  root included, and no way to make a namespace that would give some back;
- ``--unshare-ipc``, a private ``/dev/shm``: no shared memory with outside;
- ``--die-with-parent``: the command ends if ``vaultd run`` is killed;
- ``--new-session`` where the kernel still lets a process push keystrokes
  into its terminal (TIOCSTI): into the shell outside, unconfined;
- each directory above a hidden path is bound onto itself, so it is a mount
  point, which cannot be renamed: the child cannot move ``~/.config`` aside
  and plant a config of its own for the daemon's next start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vaultd.isolation.plan import Plan


def _ancestors(paths: Sequence[str]) -> list[str]:
    found: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent != "/":
            found.add(parent)
            parent = os.path.dirname(parent)
    return sorted(found, key=lambda p: (p.count("/"), p))


def namespaces(*, root: bool, new_session: bool, private_net: bool) -> list[str]:
    """The options that make the namespaces and drop every privilege."""
    args = [
        *("--bind", "/", "/"),
        # bwrap's own minimal /dev (null, zero, tty, random, a devpts of its
        # own...): not the host's, where root could read a disk raw (the key
        # from the file system's blocks) and a user the other terminals.
        *("--dev", "/dev"),
        *("--proc", "/proc"),
        # Root (mapped to root) may write sysctls without any capability:
        # kernel.core_pattern would run a program of its choosing as real
        # root. bwrap leaves /proc/sys writable where it cannot tell it is.
        *("--ro-bind", "/proc/sys", "/proc/sys"),
        # sysfs holds the user's own cgroups (cgroup.kill, cgroup.freeze of
        # the daemon's unit) and, for root, tunables of the machine.
        *("--ro-bind", "/sys", "/sys"),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-cgroup-try",
        "--unshare-user",
        "--disable-userns",
        "--assert-userns-disabled",
        "--die-with-parent",
        *("--cap-drop", "ALL"),
    ]
    if os.path.exists("/proc/sysrq-trigger"):
        args += ["--ro-bind", "/proc/sysrq-trigger", "/proc/sysrq-trigger"]
    if root:
        # Files root owns stay root's inside (not "nobody"'s).
        args += ["--uid", "0", "--gid", "0"]
    if new_session:
        args.append("--new-session")
    if private_net:
        args.append("--unshare-net")
    return args


def hidden_files(plan: Plan) -> list[str]:
    """The hidden paths that are files (each covered by an empty file of its own)."""
    return [path for path in plan.hidden if not os.path.isdir(path)]


def command_line(
    bwrap: str,
    plan: Plan,
    command: Sequence[str],
    *,
    empty_fds: Sequence[int],
    status_fd: int,
    root: bool,
    new_session: bool,
) -> list[str]:
    """``bwrap ... -- command``. ``empty_fds``, one per ``hidden_files`` (bwrap reads
    each to its end and closes it), read as empty (``/dev/null``): the content
    of the hidden files; ``status_fd`` gets bwrap's JSON status lines."""
    args = [
        bwrap,
        *namespaces(root=root, new_session=new_session, private_net=plan.proxy is not None),
    ]
    args += ["--json-status-fd", str(status_fd)]
    # Order matters: the pins, then read-only over them, then the hidden
    # paths over everything (a later mount covers an earlier one).
    for directory in _ancestors(plan.hidden):
        args += ["--bind", directory, directory]
    for path in plan.read_only:
        args += ["--ro-bind", path, path]
    if plan.writable_cwd is not None:
        # The working directory lies in a read-only one (root in /etc/...):
        # it stays the command's, the rest stays read-only.
        args += ["--bind", plan.writable_cwd, plan.writable_cwd]
    for path in plan.emptied:
        # Sockets that would start or reach an unconfined process: the
        # system bus and systemd (root is root to them), Docker, X11.
        args += ["--tmpfs", path]
    files = dict(zip(hidden_files(plan), empty_fds, strict=True))
    for path in sorted(plan.hidden, key=lambda p: p.count("/")):
        if path in files:
            args += ["--perms", "0000", "--ro-bind-data", str(files[path]), path]
        else:
            args += ["--perms", "0000", "--tmpfs", path, "--remount-ro", path]
    return [*args, "--", *command]
