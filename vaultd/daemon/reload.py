"""Reloading the config in the running daemon: SIGHUP, ``systemctl --user reload vaultd``.

The file is read again as it was at start (``config.reload_config``: the same
path and overrides). An invalid file changes nothing: one log line says why,
and the daemon goes on with the config it has. Otherwise every setting that
can change in a running daemon takes effect for the next request; the keys
in ``RESTART_KEYS`` keep the values the daemon started with, and a log line
names them. The log names what changed, never a value: a service's headers
may hold something private.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from aiohttp import web

from vaultd.config import SETTING_ATTRIBUTES, Config, reload_config, setting_items
from vaultd.daemon.sdnotify import notify
from vaultd.errors import VaultdError
from vaultd.http.appkeys import LIVE_CONFIG, VAULT
from vaultd.http.chain import STANDARD_CHAIN
from vaultd.http.guard import HostPolicy
from vaultd.prices import PriceTable
from vaultd.proxy.routes import CACHE, FORWARDER, USAGE

log = logging.getLogger("vaultd")

# What only a restart applies: where the daemon listens and how long an idle
# connection lives (its sockets and aiohttp's server are made once), the
# vault it opened and its key, and what the proxy's upstream pool and its
# bounds were built with (proxy.routes makes them once at start). The
# [sources.NAME] tables too (``keeping_restart_keys``).
RESTART_KEYS = (
    "[server] host",
    "[server] port",
    "[server] idle_timeout",
    "[storage] data_dir",
    "[crypto] key_file",
    "[proxy] connect_timeout",
    "[proxy] read_timeout",
    "[proxy] pool_timeout",
    "[proxy] max_session_concurrency",
)


def keeping_restart_keys(running: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """``new`` with ``running``'s values of the keys only a restart applies, and
    the names of those whose values differ."""
    pending = tuple(
        key
        for key in RESTART_KEYS
        if getattr(new, SETTING_ATTRIBUTES[key]) != getattr(running, SETTING_ATTRIBUTES[key])
    )
    kept = {SETTING_ATTRIBUTES[key]: getattr(running, SETTING_ATTRIBUTES[key]) for key in pending}
    if new.sources != running.sources:
        # The sources' clients, logins and rounds are made once, at start.
        pending += ("[sources]",)
        kept["sources"] = running.sources
    return replace(new, **kept), pending


def changes(old: Config, new: Config) -> str:
    """What differs between ``old`` and ``new``, by setting name only
    ("changed [proxy] read_timeout, [services.openai]; added [services.x]")."""
    before, after = setting_items(old), setting_items(new)
    parts = []
    for verb, names in (
        ("changed", [k for k in after if k in before and after[k] != before[k]]),
        ("added", [k for k in after if k not in before]),
        ("removed", [k for k in before if k not in after]),
    ):
        if names:
            parts.append(f"{verb} {', '.join(names)}")
    return "; ".join(parts)


def reload_app(app: web.Application) -> bool:
    """Read the config again and apply it to ``app``; whether it was applied.

    Runs on the event loop between requests: a request sees the old settings
    or the new ones, each whole (one in flight may see the new ones for its
    later steps).
    """
    if not app.frozen:
        # Its parts are still being made from the config it started with.
        log.warning("config not reloaded: the daemon is still starting; send SIGHUP again")
        return False
    live = app[LIVE_CONFIG]
    running = live.config
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        effective, pending = keeping_restart_keys(running, reload_config(running))
        # Everything that can still refuse the file, before anything changes.
        hosts = HostPolicy(effective.allowed_hosts)
        PriceTable(effective.prices)  # its checks, before the forwarder builds its own
    except VaultdError as exc:
        log.error("config not reloaded, the daemon keeps the one it has: %s", exc)
        notify("READY=1")
        return False
    where = effective.config_file or "defaults (no config file)"
    if pending:
        log.warning(
            "config: %s changed in %s, but only a restart applies %s; "
            "the daemon keeps the %s it started with",
            ", ".join(pending),
            where,
            *(("it", "value") if len(pending) == 1 else ("them", "values")),
        )
    changed = changes(running, effective)
    guard = app[STANDARD_CHAIN].guard
    guard.policy = hosts
    guard.origins = frozenset(effective.allowed_origins)
    vault = app.get(VAULT)
    if vault is not None:
        vault.reconfigure(effective)
    _retarget_proxy(app, running, effective)
    live.replace(effective, pending)
    idle = "nothing else changed" if pending else "nothing changed"
    log.info("config reloaded from %s: %s", where, changed or idle)
    notify("READY=1")
    return True


def _retarget_proxy(app: web.Application, old: Config, new: Config) -> None:
    """Point the proxy's long-lived parts at ``new``."""
    forwarder = app.get(FORWARDER)
    if forwarder is not None:
        forwarder.reconfigure(new)
    recorder = app.get(USAGE)
    if recorder is not None:
        # Read by the usage writer at its next flush and prune.
        recorder.interval = new.usage_flush_interval
        recorder.audit_keep_rows = new.audit_max_rows
        recorder.audit_keep_seconds = new.audit_max_age
    cache = app.get(CACHE)
    if cache is not None and old.services != new.services:
        # A cached secret's redaction patterns follow its service's auth style:
        # a changed service must have them made again.
        cache.clear()
