"""Whether this machine can confine a command as ``--isolate`` promises.

Checked once, before anything runs: the tools are there, the kernel has the
Landlock scopes, and bubblewrap can make its namespaces here (some
distributions and containers forbid unprivileged user namespaces). A trial
sandbox that runs ``true`` is the honest test of the last one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from vaultd.isolation.bubblewrap import namespaces
from vaultd.isolation.scope import SCOPE_ABI, landlock_abi, scoped_ruleset

TRIAL_TIMEOUT = 10
# Where a bwrap is taken from: system directories, root's alone. A bwrap found
# earlier on PATH (~/.local/bin comes first in many profiles) could have been
# planted by the last confined command, to run the next one unconfined.
TRUSTED_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")
NOT_INSTALLED = (
    "bubblewrap is not installed (apt install bubblewrap; dnf install bubblewrap): "
    "a root-owned bwrap in /usr/bin, /bin or /usr/local/bin on PATH"
)


def _root_only(path: str) -> bool:
    """Whether ``path`` and every directory above it are root's and no one else's to change."""
    current = os.path.realpath(path)
    while True:
        try:
            info = os.stat(current)
        except OSError:
            return False
        if info.st_uid != 0 or info.st_mode & 0o022:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


def trusted_bwrap(path: str | None = None) -> str | None:
    """The bwrap to run: on ``path`` (PATH by default), in a system directory, root's."""
    trusted = {os.path.realpath(d) for d in TRUSTED_DIRS}
    for directory in (path if path is not None else os.environ.get("PATH", os.defpath)).split(
        os.pathsep
    ):
        if not directory or os.path.realpath(directory) not in trusted:
            continue
        candidate = os.path.join(directory, "bwrap")
        if os.access(candidate, os.X_OK) and _root_only(candidate):
            return os.path.realpath(candidate)
    return None


def problems(net: str, *, trial: bool = True) -> list[str]:
    """Why ``--isolate --net NET`` cannot run here, one line each; [] when it can."""
    if not sys.platform.startswith("linux"):
        return ["--isolate needs Linux (bubblewrap and Landlock)"]
    found: list[str] = []
    bwrap = trusted_bwrap()
    if bwrap is None:
        found.append(NOT_INSTALLED)
    abi = landlock_abi()
    if abi < 0:
        found.append("the Python package landlockpy is missing (pip install landlockpy)")
    elif abi < SCOPE_ABI:
        found.append(
            f"the kernel's Landlock ABI is {abi} (needs {SCOPE_ABI}, Linux 6.12 or later, "
            "with Landlock enabled: lsm=...,landlock)"
        )
    if found or not trial:
        return found
    assert bwrap is not None
    problem = _trial(bwrap, private_net=net == "proxy-only")
    return [problem] if problem else []


def _trial(bwrap: str, *, private_net: bool) -> str | None:
    true = shutil.which("true") or "/bin/true"
    argv = [
        bwrap,
        *namespaces(root=os.geteuid() == 0, new_session=False, private_net=private_net),
        "--",
        true,
    ]
    try:
        ruleset = scoped_ruleset()
        done = subprocess.run(  # noqa: S603 - our own fixed command line
            argv,
            preexec_fn=ruleset.restrict,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TRIAL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"a trial sandbox could not start: {exc.__class__.__name__}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = said[-1][:200] if said else f"exit status {done.returncode}"
        return f"bubblewrap cannot make its namespaces here ({reason})"
    return None
