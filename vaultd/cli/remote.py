"""What the CLI knows of remote sources' credentials: the running daemon's view of them.

The CLI reads the vault's file itself, but a remote secret lives only in
the daemon's memory (DESIGN 13), so ``list`` and ``show`` ask the daemon
(``GET /api/credentials?source=NAME``) with a ``read`` token made for a
minute in the vault and revoked at once, as ``doctor`` does. A daemon that
is down costs the listing its remote part and one line saying so, never
the local part. Writes to a remote credential are refused here with where
to make them instead.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import urllib.error
import urllib.parse

from vaultd.config import Config
from vaultd.errors import ReadOnlySource, VaultdError
from vaultd.models import Credential
from vaultd.store.db import connect

_FIELDS = {f.name for f in dataclasses.fields(Credential)}


def _get(url: str, token: str, path: str) -> object:
    from vaultd.cli.child import daemon_get

    try:
        return daemon_get(url, token, path, timeout=5.0, limit=8 << 20)
    except urllib.error.HTTPError as exc:
        raise VaultdError(f"the daemon at {url} answered {exc.code} to GET {path}") from None


def remote_credentials(config: Config, service: str | None = None) -> tuple[list[Credential], str]:
    """The remote sources' credentials (of ``service``) as the daemon holds them, and
    ``""``; or none and one line saying why they are not shown."""
    if not config.sources:
        return [], ""
    from vaultd.cli.child import check_daemon, daemon_url, read_token

    names = ", ".join(f"[sources.{name}]" for name in config.sources)
    try:
        url = daemon_url(os.environ, config)
        check_daemon(url, timeout=2.0)
        found: list[Credential] = []
        db = connect(config.db_path)
        try:
            with read_token(db, config.services, "vaultd list (remote sources)") as token:
                for source in config.sources:
                    query = {"source": source, **({"service": service} if service else {})}
                    items = _get(url, token, "/api/credentials?" + urllib.parse.urlencode(query))
                    found += [_credential(item) for item in _items(items)]
        finally:
            db.close()
    except (VaultdError, sqlite3.Error) as exc:
        return [], f"the credentials of {names} are not shown: {exc}"
    return found, ""


def _items(body: object) -> list[dict[str, object]]:
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise VaultdError("the daemon's credential listing is not a list of objects")
    return body


def _credential(item: dict[str, object]) -> Credential:
    try:
        return Credential(**{key: value for key, value in item.items() if key in _FIELDS})  # type: ignore[arg-type]
    except TypeError:
        raise VaultdError("the daemon's credential listing lacks a field") from None


def find_remote(config: Config, ref: str) -> Credential | None:
    """The remote credential ``ref`` (``service/name`` or id) names, if the daemon has one."""
    service = ref.split("/", 1)[0] if "/" in ref else None
    found, _ = remote_credentials(config, service)
    for credential in found:
        if ref in (credential.id, f"{credential.service}/{credential.name}"):
            return credential
    return None


def read_only(credential: Credential) -> ReadOnlySource:
    path = credential.remote.get("path") if credential.remote else None
    return ReadOnlySource(
        f"{credential.service}/{credential.name} is held by source {credential.source}"
        f"{f' ({path})' if path else ''}: change it there (bao kv put ...), not in the local vault"
    )
