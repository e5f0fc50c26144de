"""``vaultd doctor``'s look at each source: reachable, logged in, how many credentials,
how long the token has left. Reads no secret (lists only) and prints none.

An AppRole login made for the check is revoked after it (``revoke-self``);
a token file's token is the person's own, and is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from vaultd.errors import VaultdError
from vaultd.sourceconfig import SourceSettings
from vaultd.sources.auth import AuthFailed, check_files
from vaultd.sources.catalog import Catalog
from vaultd.sources.client import SourceDown
from vaultd.sources.source import Source
from vaultd.units import format_duration

# (level, message, the (service, name) pairs it lists): level is "ok", "warn"
# or "FAIL", as doctor prints them.
Finding = tuple[str, str, frozenset[tuple[str, str]]]
_NONE: frozenset[tuple[str, str]] = frozenset()


async def _probe(settings: SourceSettings, services: Mapping[str, object]) -> Finding:
    try:
        check_files(settings)
    except VaultdError as exc:
        return "FAIL", str(exc), _NONE
    catalog = Catalog([settings])
    source = Source(settings, catalog, lambda: services)
    token: str | None = None
    try:
        token = await source.auth.token()
        ttl = source.auth.ttl_left()
        listed: set[tuple[str, str]] = set()
        folders, _ = await source.list_folder(None)
        for service in folders:
            if service in services:
                _, names = await source.list_folder(service)
                listed.update((service, name) for name in names)
        count = len(listed)
    except (AuthFailed, SourceDown) as exc:
        return "FAIL", f"{settings.url}: {exc}", _NONE
    except Exception as exc:  # one FAIL line, and doctor's other checks
        reason = exc.__class__.__name__
        return "FAIL", f"{settings.url}: its answer could not be used ({reason})", _NONE
    finally:
        # The login made for this check is not left alive on the server (a
        # token file's token is the person's own, and stays).
        if token is not None and settings.auth == "approle":
            with contextlib.suppress(SourceDown):
                await source.client.call(
                    "POST", "/v1/auth/token/revoke-self", token=token, payload={}
                )
        await source.close()
    left = (
        "a token that does not expire"
        if ttl is None
        else f"token valid {format_duration(int(ttl))}"
    )
    level = "warn" if ttl is not None and ttl < 2 * settings.refresh_interval else "ok"
    plural = "" if count == 1 else "s"
    return (
        level,
        f"{settings.url} ({settings.auth}): {count} credential{plural} under "
        f"{settings.mount}/{settings.prefix}; {left}",
        frozenset(listed),
    )


def probe_sources(
    sources: Mapping[str, SourceSettings], services: Mapping[str, object]
) -> dict[str, Finding]:
    """Each source's finding, by name (run from the synchronous CLI)."""

    async def all_of() -> dict[str, Finding]:
        return {name: await _probe(s, services) for name, s in sources.items()}

    return asyncio.run(all_of())
