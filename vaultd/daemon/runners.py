"""Which runner serves ``vaultd serve``: the fast one where aiohttp's internals allow it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vaultd.daemon.connection import DaemonRunner
from vaultd.http import fastpaths


def _fast_missing() -> str | None:
    # Imported here: the module's imports are aiohttp's internals themselves.
    from vaultd.daemon import connection_fast

    return connection_fast.internals_missing()


def daemon_runner(app: web.Application, **kwargs: Any) -> DaemonRunner:
    """The runner for ``app``: the fast one where aiohttp's internals allow it."""
    if fastpaths.choose("server", _fast_missing):
        from vaultd.daemon.connection_fast import FastDaemonRunner

        return FastDaemonRunner(app, **kwargs)
    return DaemonRunner(app, **kwargs)
