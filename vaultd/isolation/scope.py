"""The Landlock domain the confined command runs in: no signal, no abstract socket out.

bubblewrap's pid namespace already hides the daemon and ``vaultd run`` from
the command. This second wall, from the kernel's Landlock (ABI 6 and later,
through the ``landlockpy`` binding's public API), holds even if a process
outside became visible: a process in the domain cannot signal one outside
it, nor connect to an abstract Unix socket outside it (the D-Bus session
bus, an agent's socket), and ptrace is limited to the domain by Landlock
itself. It handles no file or network access: the mounts do that.
"""

from __future__ import annotations

from typing import Any

# The first Landlock ABI with the signal and abstract-socket scopes.
SCOPE_ABI = 6


def landlock_abi() -> int:
    """The kernel's Landlock ABI (0: none), or -1 when the binding is missing."""
    try:
        import landlockpy
    except ImportError:
        return -1
    return int(landlockpy.abi_version())


def scoped_ruleset() -> Any:
    """A ruleset to enforce in the child (``.restrict()``, which also sets
    no_new_privs): signals and abstract sockets scoped; ``UnsupportedError``
    (best_effort off) rather than a weaker one where the kernel cannot."""
    import landlockpy

    return landlockpy.Ruleset(
        handled_fs=landlockpy.AccessFS.NONE,
        handled_net=landlockpy.AccessNet.NONE,
        scoped=landlockpy.Scope.SIGNAL | landlockpy.Scope.ABSTRACT_UNIX_SOCKET,
        best_effort=False,
    )
