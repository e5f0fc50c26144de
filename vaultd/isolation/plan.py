"""What a confined command must not reach, checked before it starts.

Every path is resolved, must exist (one that does not could be created by
the child, and then read by vaultd), and must not be reachable under another
name that the mounts would not cover: a hard link to a hidden file, a bind
mount of a hidden directory elsewhere, or the working directory inside one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import vaultd
from vaultd.config import Config, config_home
from vaultd.core.keysource import PASSPHRASE_FILE_ENV
from vaultd.errors import VaultdError

NETS = ("all", "proxy-only")
CONFIG_DIR = "the config directory"
# vaultd's own paths: where a swapped symlink would redirect the daemon.
OWN_PATHS = (CONFIG_DIR, "the data directory", "the key file", "the config file")
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
    # The working directory, when it lies in a read-only path: kept writable.
    writable_cwd: str | None = None
    # Directories of the system's sockets, each covered by an empty tmpfs.
    emptied: tuple[str, ...] = ()


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


def _passphrase_paths(
    env: Mapping[str, str], passphrase_file: Path | None
) -> list[tuple[str, str]]:
    """Every place ``keysource.get_passphrase`` may read the passphrase from."""
    found = []
    named = passphrase_file or (
        Path(env[PASSPHRASE_FILE_ENV]) if env.get(PASSPHRASE_FILE_ENV) else None
    )
    if named is not None:
        found.append((str(named), "the passphrase file"))
    credentials = env.get("CREDENTIALS_DIRECTORY", "")
    if credentials and os.path.isdir(credentials):
        found.append((credentials, "CREDENTIALS_DIRECTORY"))
    return found


def _session_sockets(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Where the user's session keeps sockets that start or drive unconfined
    processes: systemd-run --user (D-Bus, systemd), tmux and screen send-keys."""
    uid = os.getuid()
    candidates = [
        (env.get("XDG_RUNTIME_DIR", ""), "XDG_RUNTIME_DIR"),
        # Also when XDG_RUNTIME_DIR is unset (after su, in cron): the same place.
        (f"/run/user/{uid}", "the user's runtime directory"),
        (os.path.join(env.get("TMUX_TMPDIR") or "/tmp", f"tmux-{uid}"), "tmux's sockets"),  # noqa: S108
        (os.path.dirname(env.get("TMUX", "").split(",")[0]), "tmux's sockets"),
        (env.get("SCREENDIR") or f"/run/screen/S-{pwd_name(uid)}", "screen's sockets"),
    ]
    bus = env.get("DBUS_SESSION_BUS_ADDRESS", "")
    for part in bus.split(";"):
        for item in part.partition(":")[2].split(","):
            key, _, value = item.partition("=")
            if key == "path" and value:
                candidates.append((value, "the D-Bus session bus"))
    return [(path, what) for path, what in candidates if path and os.path.exists(path)]


def pwd_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
    found += _passphrase_paths(env, passphrase_file)
    found += _session_sockets(env)
    found += [(path, "[run] hide path") for path in config.run_hide]
    return [
        (path, what)
        for path, what in found
        # The key file may not exist in passphrase mode; the rest must.
        if what != "the key file" or os.path.lexists(path)
    ]


# Sockets of the system that start processes outside for whoever asks, or
# as root for root: emptied for every confined command.
SYSTEM_SOCKETS = ("/run/systemd", "/run/dbus", "/run/docker.sock", "/tmp/.X11-unix")  # noqa: S108


def _config_dirs(env: Mapping[str, str]) -> list[str]:
    """Where the user's systemd reads units, drop-ins and their environment: what
    the daemon's next start runs. Made (0700) if missing, so the command cannot."""
    config = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    data = env.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    found = []
    for path in (
        os.path.join(config, "systemd"),
        os.path.join(config, "environment.d"),
        os.path.join(data, "systemd"),
    ):
        with contextlib.suppress(OSError):
            os.makedirs(path, mode=0o700, exist_ok=True)
        found.append(path)
    return found


def _install_paths(env: Mapping[str, str]) -> list[str]:
    """What vaultd runs from, read-only inside: its package, its interpreter and
    their libraries, the ``vaultd`` command, the user's systemd configuration,
    and for root the system's directories."""
    command = shutil.which("vaultd", path=env.get("PATH"))
    candidates = [
        os.path.dirname(vaultd.__file__),
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *(p for p in sys.path if p and os.path.isdir(p) and p != os.getcwd()),
        *(os.path.dirname(os.path.abspath(command)) for _ in [command] if command),
        *_config_dirs(env),
    ]
    if os.geteuid() == 0:
        candidates += ROOT_READ_ONLY
    return [os.path.realpath(p) for p in candidates if os.path.isdir(p)]


def _check_no_swappable_links(paths: Iterable[tuple[str, str]]) -> None:
    """Refuse a vaultd path reached through a symlink the command could replace:
    it would point the daemon's next start at files of its own."""
    for path, what in paths:
        absolute = os.path.abspath(os.path.expanduser(path))
        parent = "/"
        for part in absolute.strip("/").split("/"):
            here = os.path.join(parent, part)
            if os.path.islink(here) and os.access(parent, os.W_OK):
                raise IsolationUnavailable(
                    f"{what} {absolute} is reached through the symlink {here}, which the "
                    f"command could replace; use the real path ({os.path.realpath(here)}) "
                    "in XDG_CONFIG_HOME, XDG_DATA_HOME, VAULTD_CONFIG or the config"
                )
            parent = os.path.realpath(here)


def make_plan(
    config: Config,
    env: Mapping[str, str],
    passphrase_file: Path | None,
    net: str,
    proxy: tuple[str, int] | None,
) -> Plan:
    """The plan for this vault; ``IsolationUnavailable`` if it cannot be kept."""
    paths = vaultd_paths(config, env, passphrase_file)
    _check_no_swappable_links(p for p in paths if p[1] in OWN_PATHS)
    hidden = _outermost(_real(path, what) for path, what in paths)
    # What is hidden needs no read-only mount as well.
    read_only = _outermost(p for p in _install_paths(env) if not any(_within(p, h) for h in hidden))
    _check_no_other_names(hidden)
    cwd = os.path.realpath(os.getcwd())
    for h in hidden:
        if _within(cwd, h):
            raise IsolationUnavailable(f"the working directory is inside {h}, which is hidden")
    writable_cwd = cwd if any(_within(cwd, r) for r in read_only) else None
    emptied = tuple(
        p for p in SYSTEM_SOCKETS if os.path.exists(p) and not any(_within(p, h) for h in hidden)
    )
    if net == "proxy-only" and os.path.isdir("/run"):
        # No socket of the system either: systemd-resolved's would answer DNS.
        emptied = ("/run", *(p for p in emptied if not _within(p, "/run")))
    return Plan(
        hidden,
        read_only,
        net,
        proxy if net == "proxy-only" else None,
        writable_cwd=writable_cwd,
        emptied=emptied,
    )


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
    check_no_other_mounts(hidden)


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


class Mount(NamedTuple):
    device: str  # major:minor
    root: str  # the directory of the file system shown here
    point: str  # where


_OCTAL = re.compile(rb"\\([0-7]{3})")


def read_mounts() -> list[Mount]:
    """This process's mounts, in order (a later one over the same point covers an
    earlier one)."""
    try:
        return parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    except OSError:
        return []


def parse_mountinfo(raw: bytes) -> list[Mount]:
    """Mounts as /proc/self/mountinfo lists them, its escapes undone."""
    found = []
    for line in raw.splitlines():
        fields = line.split(b" ")
        if len(fields) >= 5:
            root, point = (os.fsdecode(_OCTAL.sub(_octal, f)) for f in (fields[3], fields[4]))
            found.append(Mount(fields[2].decode("ascii", "replace"), root, point))
    return found


def _octal(match: re.Match[bytes]) -> bytes:
    # mountinfo writes space, tab, newline and backslash as \ooo; other bytes
    # (UTF-8 names) as they are.
    return bytes([int(match.group(1), 8)])


def check_no_other_mounts(hidden: Sequence[str], mounts: Sequence[Mount] | None = None) -> None:
    """Refuse a hidden path that the same file system also shows elsewhere: a bind
    mount of it or of a directory above it, or the file system mounted twice.
    ``mounts``: this process's (``mounts()``) unless given."""
    mounts = read_mounts() if mounts is None else mounts
    for path in hidden:
        holders = [m for m in mounts if _within(path, m.point)]
        if not holders:
            continue
        holder = max(holders, key=lambda m: len(m.point))  # the last longest one covers
        inside = os.path.join(holder.root, os.path.relpath(path, holder.point))
        for other in mounts:
            if other is holder or other.device != holder.device:
                continue
            if not _within(os.path.normpath(inside), other.root):
                continue
            there = os.path.normpath(os.path.join(other.point, os.path.relpath(inside, other.root)))
            if not any(_within(there, h) for h in hidden):
                raise IsolationUnavailable(
                    f"{path} is also reachable at {there} (the same file system is mounted "
                    f"at {other.point}), which --isolate would not hide; unmount it first"
                )
