"""What a confined command must not reach, checked before it starts.

Every path is resolved, must exist (one that does not could be created by
the child, and then read by vaultd), and must not be reachable under another
name that the mounts would not cover: a hard link to a hidden file, a bind
mount of a hidden directory elsewhere, or the working directory inside one.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import vaultd
from vaultd.config import Config, config_home
from vaultd.errors import VaultdError

NETS = ("all", "proxy-only")
CONFIG_DIR = "the config directory"
# uid 0 without capabilities still owns what root owns: without these
# read-only, the child could rewrite /etc/ld.so.preload or a system binary
# that the daemon (or the user) runs later.
ROOT_READ_ONLY = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot")
# The most files under one hidden directory looked at for hard links: a
# vault directory holds a handful; a [run] hide of a huge tree is refused
# rather than walked for minutes.
MAX_WALK = 20_000


class IsolationUnavailable(VaultdError):
    """What was asked of ``--isolate`` cannot be given here: nothing runs."""

    status = 1
    slug = "isolation-unavailable"
    title = "Isolation unavailable"


@dataclass(frozen=True)
class Plan:
    hidden: tuple[str, ...]  # real paths, none inside another
    read_only: tuple[str, ...]  # real paths, none inside a hidden one
    net: str  # "all" or "proxy-only"
    proxy: tuple[str, int] | None  # the daemon's address, for proxy-only


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _real(path: str | Path, what: str) -> str:
    absolute = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.lexists(absolute) and what == CONFIG_DIR:
        # Unused (a config elsewhere), yet the next `vaultd` without
        # VAULTD_CONFIG reads it: made now, empty and private, so that the
        # command cannot plant a config there for it.
        os.makedirs(absolute, mode=0o700, exist_ok=True)
    if not os.path.lexists(absolute):
        raise IsolationUnavailable(
            f"{what} {absolute} does not exist; create it (or remove it from [run] hide) "
            "first: a path that does not exist cannot be kept from the command"
        )
    real = os.path.realpath(absolute)
    if real == "/":
        raise IsolationUnavailable(f"{what} {absolute} is the root directory")
    return real


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    unique = sorted(set(paths))
    return tuple(p for p in unique if not any(o != p and _within(p, o) for o in unique))


def vaultd_paths(
    config: Config, env: Mapping[str, str], passphrase_file: Path | None
) -> list[tuple[str, str]]:
    """(path, what) of everything vaultd keeps that the command must not reach."""
    found = [
        (str(config_home(env)), CONFIG_DIR),
        (str(config.data_dir), "the data directory"),
        (str(config.key_file), "the key file"),
    ]
    if config.config_file is not None:
        found.append((str(config.config_file), "the config file"))
    if passphrase_file is not None:
        found.append((str(passphrase_file), "the passphrase file"))
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        # Its D-Bus and systemd sockets start unconfined processes for the
        # asker (systemd-run --user), as do agents' sockets kept there.
        found.append((runtime, "XDG_RUNTIME_DIR"))
    tmux = f"/tmp/tmux-{os.getuid()}"  # noqa: S108 - tmux's own socket directory
    if os.path.isdir(tmux):
        found.append((tmux, "the tmux socket directory"))  # send-keys to a shell outside
    found += [(path, "[run] hide path") for path in config.run_hide]
    return [
        (path, what)
        for path, what in found
        # The key file may not exist in passphrase mode; the rest must.
        if what != "the key file" or os.path.lexists(path)
    ]


def _install_paths(env: Mapping[str, str]) -> list[str]:
    """What vaultd runs from: its package, its interpreter and their libraries,
    and the user's systemd units (a changed ExecStart runs at the next start).
    Not the working directory, nor what holds it (``python -m`` puts it on
    ``sys.path``): the command's project stays its to change."""
    cwd = os.path.realpath(os.getcwd())
    candidates = [
        os.path.dirname(vaultd.__file__),
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *(p for p in sys.path if p and os.path.isdir(p)),
        os.path.join(
            env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "systemd", "user"
        ),
    ]
    if os.geteuid() == 0:
        candidates += ROOT_READ_ONLY
    found = (os.path.realpath(p) for p in candidates if os.path.isdir(p))
    return [p for p in found if not _within(cwd, p)]


def make_plan(
    config: Config,
    env: Mapping[str, str],
    passphrase_file: Path | None,
    net: str,
    proxy: tuple[str, int] | None,
) -> Plan:
    """The plan for this vault; ``IsolationUnavailable`` if it cannot be kept."""
    paths = vaultd_paths(config, env, passphrase_file)
    hidden = _outermost(_real(path, what) for path, what in paths)
    # What is hidden needs no read-only mount as well.
    read_only = _outermost(p for p in _install_paths(env) if not any(_within(p, h) for h in hidden))
    _check_no_other_names(hidden)
    cwd = os.path.realpath(os.getcwd())
    for h in hidden:
        if _within(cwd, h):
            raise IsolationUnavailable(f"the working directory is inside {h}, which is hidden")
    return Plan(hidden, read_only, net, proxy if net == "proxy-only" else None)


def _check_no_other_names(hidden: tuple[str, ...]) -> None:
    """Refuse a hidden file reachable by another name: a hard link, a bind mount."""
    for root in hidden:
        for seen, (path, info) in enumerate(_entries(root), start=1):
            if seen > MAX_WALK:
                raise IsolationUnavailable(
                    f"{root} holds more than {MAX_WALK} files: too many to check for hard links"
                )
            if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
                raise IsolationUnavailable(
                    f"{path} has {info.st_nlink} hard links: the other names are outside "
                    "what --isolate hides; remove them first"
                )
    for mount_point, source in _mounts():
        for root in hidden:
            if _within(mount_point, root) and mount_point != root:
                raise IsolationUnavailable(f"a file system is mounted inside {root}")
            if source is not None and _within(source, root) and not _within(mount_point, root):
                raise IsolationUnavailable(f"{root} is also mounted at {mount_point}")


def _entries(root: str) -> Iterable[tuple[str, os.stat_result]]:
    info = os.lstat(root)
    yield root, info
    if not stat.S_ISDIR(info.st_mode):
        return
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            try:
                yield path, os.lstat(path)
            except FileNotFoundError:
                continue


def _mounts() -> list[tuple[str, str | None]]:
    """(mount point, the path it shows when it is a bind of a directory elsewhere)."""
    found: list[tuple[str, str | None]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    by_device: dict[str, list[tuple[str, str]]] = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        device, root, point = fields[2], _unescape(fields[3]), _unescape(fields[4])
        by_device.setdefault(device, []).append((root, point))
    for mounts in by_device.values():
        # A bind mount shows a directory of a file system (``root``) at
        # ``point``; where that file system is also mounted whole, that
        # directory has another path too.
        whole = [point for root, point in mounts if root == "/"]
        for root, point in mounts:
            source = None
            if root != "/" and whole:
                source = os.path.join(whole[0], root.lstrip("/"))
            found.append((point, source))
    return found


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape")
