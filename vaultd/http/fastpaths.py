"""Whether vaultd may use aiohttp's internals where they are worth it, decided once.

vaultd installs with any aiohttp from its lower bound up, releases that do
not exist yet included, so it must run on aiohttp's public, documented API
alone. Two places go past it, because that is worth it (figures from
``bench/proxy_bench.py`` on the 2-core reference machine):

- ``client``: the proxy sends upstream through aiohttp's connector and
  ``ClientRequest`` instead of ``ClientSession.request`` (about 18% of
  throughput; ``proxy/client_fast.py``);
- ``server``: ``vaultd serve``'s connections answer unparseable requests with
  problems and bound a request head while it arrives
  (``daemon/connection_fast.py``). This one is for what a user sees, not
  for speed.

Proxied calls skip the router on both paths (``proxy/direct.py``, about 7%
of throughput). That is not one of these: it takes none of aiohttp's
internals, only ``web.Server``'s ``request_handler``, public but not in
aiohttp's reference documentation (the one exception to "documented", which
the README names), and has its own start-up check.

Each checks at start that the internals it calls are there as it calls them
(``*_internals_missing``) and otherwise the public path serves. It gives
every routed request the same answer; what only the fast server path does
(a problem body for a request aiohttp cannot parse, a bound on a head while
it arrives) is then aiohttp's own (a plain-text 400, its line limits). A
path that is off is logged once as a warning, and the daemon's "listening
on" line says which paths it took (``summary``).
``VAULTD_FAST_PATHS=off`` forces the public paths (the test suite runs the
proxy and SDK tests that way too); ``=client`` or ``=server`` keeps only that one.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from types import ModuleType

from vaultd.errors import ConfigError

log = logging.getLogger("vaultd")

ENV_VAR = "VAULTD_FAST_PATHS"
NAMES = frozenset({"client", "server"})
_ALL = frozenset({"", "auto"})
_NONE = frozenset({"off", "none"})
# What ``choose`` decided, by name, in this process.
_chosen: dict[str, bool] = {}


def allowed(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The fast paths the environment allows: ``auto`` (or unset) all, ``off`` none,
    or a comma-separated list of names (for measuring one against the other).

    An unknown value is an error, not a silent default.
    """
    value = (os.environ if env is None else env).get(ENV_VAR, "").strip().lower()
    if value in _ALL:
        return NAMES
    if value in _NONE:
        return frozenset()
    names = frozenset(part.strip() for part in value.split(","))
    if not names <= NAMES:
        raise ConfigError(
            f"{ENV_VAR} must be auto, off, or some of {', '.join(sorted(NAMES))};"
            f" not {value[:40]!r}"
        )
    return names


def choose(name: str, missing: Callable[[], str | None]) -> bool:
    """Whether the fast path ``name`` serves; a path that is off is logged once per process.

    ``missing`` names what of aiohttp's internals is not as expected, or is
    None; it is not even asked when the environment turned the path off.
    """
    if name not in allowed():
        use, why = False, f"not in {ENV_VAR}"
    else:
        try:
            what = missing()
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            # A module or name that moved: the probe's own imports failed.
            what = f"{type(exc).__name__}: {exc}"
        use = what is None
        why = str(what)
    if use:
        _chosen[name] = True
    else:
        fall_back(name, why)
    return use


def load(name: str, module: str) -> ModuleType | None:
    """The fast path's module if ``choose`` lets it serve, else None.

    ``module`` is imported only here, because its own imports are aiohttp's
    internals, and must offer ``internals_missing()``: the probe.
    """
    loaded: list[ModuleType] = []

    def missing() -> str | None:
        found = importlib.import_module(module)
        loaded.append(found)
        what: str | None = found.internals_missing()
        return what

    return loaded[0] if choose(name, missing) else None


def fall_back(name: str, why: str) -> None:
    """The fast path ``name`` is off (at start, or later: an instance lacked an internal
    its class had): a warning unless it was off already, and ``summary`` says so."""
    if _chosen.get(name, True):
        log.warning("fast path %s: off (%s); using aiohttp's public API", name, why)
    _chosen[name] = False


def summary() -> str:
    """``client on, server off``: the latest choice of each fast path, for the log."""
    return ", ".join(f"{name} {'on' if use else 'off'}" for name, use in sorted(_chosen.items()))
