"""``[sources.NAME]``: where a team's shared secrets engine is and how to log in (DESIGN 13).

Parsed and checked with the rest of the config, before anything is sent:
the URL is https:// unless the host is loopback; the KV mount and prefix
are made of path segments vaultd builds URLs from, so each segment must be
a plain name (``check_segment``), never ``..``, never empty, never escaped.
The files named here (the AppRole secret_id, the token file) are read and
checked for their mode where they are used (``vaultd.sources.auth``): a
CLI verb that never talks to the source must not fail on them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vaultd.errors import ConfigError
from vaultd.services import check_base_url, config_string
from vaultd.units import MAX_DURATION, parse_duration

SOURCE_TYPES = ("openbao", "vault")  # Vault's KV v2 API is OpenBao's
AUTH_KINDS = ("approle", "token_file")
# A source's name is what credentials show as their ``source``; "local" is
# taken by the vault's own.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RESERVED_NAMES = frozenset({"local"})
# One segment of a KV path: what vaultd puts between two slashes of a URL.
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# An AppRole role_id is a UUID; other forms are allowed, printable and short.
ROLE_ID_MAX = 256
# systemd's LoadCredential= puts a source's secret_id here when the table names none.
CREDENTIAL_PREFIX = "vaultd-source-"
SOURCE_KEYS = (
    "type",
    "url",
    "ca_file",
    "mount",
    "prefix",
    "auth",
    "role_id",
    "secret_id_file",
    "token_file",
    "refresh_interval",
    "max_stale",
)


@dataclass(frozen=True)
class SourceSettings:
    """One ``[sources.NAME]`` table, checked; paths made absolute."""

    name: str
    type: str
    url: str
    mount: str
    prefix: str
    auth: str
    ca_file: Path | None = None
    role_id: str | None = None
    secret_id_file: Path | None = None
    token_file: Path | None = None
    refresh_interval: int = 300
    max_stale: int = 3600


def check_segment(value: str) -> str | None:
    """Why ``value`` cannot be one segment of a KV path, or None if it can.

    The rule is a whitelist: no ``..``, no empty segment, no ``%`` (so no
    escape the server would decode into one), no control character, no slash.
    """
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is a relative path segment"
    if not SEGMENT.fullmatch(value):
        return "must be 1 to 128 of A-Z a-z 0-9 . _ - starting with a letter or digit"
    return None


def check_kv_path(where: str, value: object) -> str:
    """A mount or prefix: segments joined by single slashes (no leading or trailing one)."""
    text = config_string(where, value, empty=False)
    for segment in text.split("/"):
        problem = check_segment(segment)
        if problem is not None:
            # repr: a segment may hold what a terminal would act on.
            raise ConfigError(f"{where}: the path segment {segment[:40]!r} {problem}")
    return text


def _duration(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f'{where} must be a duration such as "5m" or "1h"')
    try:
        seconds = value if isinstance(value, int) else parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not 0 < seconds <= MAX_DURATION:
        raise ConfigError(f"{where} must be longer than zero and at most 100 years")
    return seconds


def _file(where: str, value: object, base: Path, env: Mapping[str, str]) -> Path:
    text = config_string(where, value, empty=False)
    if text == "~" or text.startswith("~/"):
        # The HOME the config is read with (as config.py's XDG paths are).
        home = env.get("HOME", "")
        text = (home if os.path.isabs(home) else os.path.expanduser("~")) + text[1:]
    path = Path(text)
    return path if path.is_absolute() else (base / path).absolute()


def _one(name: str, table: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> SourceSettings:
    where = f"[sources.{name}]"
    unknown = [key for key in table if key not in SOURCE_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0][:40]!r} in {where}")
    kind = table.get("type", "openbao")
    if kind not in SOURCE_TYPES:
        raise ConfigError(f"{where} type must be one of {', '.join(SOURCE_TYPES)}")
    if "url" not in table:
        raise ConfigError(f"{where} needs a url (https://bao.example.com:8200)")
    url = check_base_url(f"{where} url", config_string(f"{where} url", table["url"]))
    if urlpath(url):
        raise ConfigError(f"{where} url must be the server's address alone, with no path")
    auth = table.get("auth")
    if auth not in AUTH_KINDS:
        raise ConfigError(f"{where} auth must be one of {', '.join(AUTH_KINDS)}")
    settings: dict[str, Any] = {
        "name": name,
        "type": kind,
        "url": url,
        "mount": check_kv_path(f"{where} mount", table.get("mount", "secret")),
        "prefix": check_kv_path(f"{where} prefix", table.get("prefix", "vaultd")),
        "auth": auth,
        "refresh_interval": _duration(
            f"{where} refresh_interval", table.get("refresh_interval", "5m")
        ),
        "max_stale": _duration(f"{where} max_stale", table.get("max_stale", "1h")),
    }
    if "ca_file" in table:
        settings["ca_file"] = _file(f"{where} ca_file", table["ca_file"], base, env)
    if auth == "approle":
        settings.update(_approle(where, name, table, base, env))
    else:
        for key in ("role_id", "secret_id_file"):
            if key in table:
                raise ConfigError(f'{where} {key} is for auth = "approle"')
        settings["token_file"] = _file(
            f"{where} token_file", table.get("token_file", "~/.vault-token"), base, env
        )
    return SourceSettings(**settings)


def _approle(
    where: str, name: str, table: Mapping[str, Any], base: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    if "token_file" in table:
        raise ConfigError(f'{where} token_file is for auth = "token_file"')
    if "role_id" not in table:
        raise ConfigError(f"{where} needs a role_id (bao read auth/approle/role/NAME/role-id)")
    role_id = config_string(f"{where} role_id", table["role_id"], empty=False)
    if len(role_id) > ROLE_ID_MAX or " " in role_id:
        raise ConfigError(f"{where} role_id must be at most {ROLE_ID_MAX} characters, no spaces")
    if "secret_id_file" in table:
        secret_id_file = _file(f"{where} secret_id_file", table["secret_id_file"], base, env)
    else:
        credentials = env.get("CREDENTIALS_DIRECTORY", "")
        if not os.path.isabs(credentials):
            raise ConfigError(
                f"{where} needs a secret_id_file (or systemd's LoadCredential="
                f"{CREDENTIAL_PREFIX}{name}:...)"
            )
        secret_id_file = Path(credentials) / f"{CREDENTIAL_PREFIX}{name}"
    return {"role_id": role_id, "secret_id_file": secret_id_file}


def urlpath(url: str) -> str:
    """What follows the host and port of ``url`` (checked by ``check_base_url``)."""
    rest = url.split("://", 1)[1]
    return rest[rest.find("/") :] if "/" in rest else ""


def parse_sources(
    value: object, base: Path, env: Mapping[str, str]
) -> Mapping[str, SourceSettings]:
    """The ``[sources]`` tables of a config file whose directory is ``base``."""
    if not isinstance(value, dict):
        raise ConfigError("[sources] must be a table of [sources.NAME] tables")
    sources: dict[str, SourceSettings] = {}
    for name, table in value.items():
        if not SOURCE_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise ConfigError(
                f"[sources] {name[:64]!r} is not a source name (letters, digits, '_-', "
                "1-64, not 'local')"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[sources.{name}] must be a table (url, auth, ...)")
        sources[name] = _one(name, table, base, env)
    return MappingProxyType(sources)
