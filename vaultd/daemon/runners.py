"""Which runner serves ``vaultd serve``: the fast one where aiohttp's internals allow it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vaultd.daemon.connection import DaemonRunner
from vaultd.http import fastpaths


def daemon_runner(app: web.Application, **kwargs: Any) -> DaemonRunner:
    """The runner for ``app``: the fast one where aiohttp's internals allow it."""
    fast = fastpaths.load("server", "vaultd.daemon.connection_fast")
    if fast is not None:
        runner: DaemonRunner = fast.FastDaemonRunner(app, **kwargs)
        return runner
    return DaemonRunner(app, **kwargs)
