"""Configuration: the TOML file, XDG default paths and the environment overrides.

Every key the code reads is declared once in ``SCHEMA`` with its parser and
default; ``config.example.toml`` documents the same keys and a test keeps the
two equal. A wrong key, type or value is a ``ConfigError`` that names the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultd.errors import ConfigError
from vaultd.prices import Price, parse_price_overrides
from vaultd.services import Service, build_registry, config_string
from vaultd.sourceconfig import SourceSettings, parse_sources
from vaultd.units import MAX_DURATION, parse_duration, parse_size

DEFAULT_PORT = 3978
KEY_FILE_NAME = "master.key"
DB_FILE_NAME = "vault.db"
# systemd's LoadCredential=/LoadCredentialEncrypted= put the key here.
SYSTEMD_KEY_CREDENTIAL = "vaultd-master-key"

Parser = Callable[[str, object], Any]


def _path(where: str, value: object) -> str:
    return config_string(where, value, empty=False)


def _port(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be an integer port from 0 to 65535, not {value!r}")
    return value


def _positive_int(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    return value


def _bool(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _str_list(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(config_string(f"{where}[{i}]", v) for i, v in enumerate(value))


def _duration(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f'{where} must be a duration such as "90s", "8h" or "30d"')
    try:
        seconds = value if isinstance(value, int) else parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"{where} must be longer than zero")
    if seconds > MAX_DURATION:
        raise ConfigError(f"{where} must be at most 100 years")
    return seconds


def _size(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f'{where} must be a size such as "32MiB"')
    try:
        size = value if isinstance(value, int) else parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if size <= 0:
        raise ConfigError(f"{where} must be larger than zero")
    return size


# section -> key -> (parser, default). None as default means "computed" (paths).
SCHEMA: Mapping[str, Mapping[str, tuple[Parser, object]]] = {
    "server": {
        "host": (config_string, "127.0.0.1"),
        "port": (_port, DEFAULT_PORT),
        "allowed_hosts": (_str_list, []),
        "allowed_origins": (_str_list, []),
        "idle_timeout": (_duration, "60s"),
    },
    "storage": {"data_dir": (_path, None)},
    "crypto": {"key_file": (_path, None)},
    "sessions": {
        "default_ttl": (_duration, "8h"),
        "max_ttl": (_duration, "365d"),
        # How long the daemon keeps a revoked or expired session's row.
        "keep": (_duration, "7d"),
    },
    "proxy": {
        "connect_timeout": (_duration, "10s"),
        "read_timeout": (_duration, "300s"),
        "max_request_body": (_size, "32MiB"),
        "usage_flush_interval": (_duration, "1s"),
        "body_timeout": (_duration, "30s"),
        "pool_timeout": (_duration, "10s"),
        "max_session_concurrency": (_positive_int, 64),
    },
    "audit": {"max_rows": (_positive_int, 100_000), "max_age": (_duration, "90d")},
    "metering": {"add_stream_usage": (_bool, True)},
    # The most of a request body vaultd reads to decide about it (metering's
    # stream_options, and the request policy's model rules).
    "policy": {"max_inspect_body": (_size, "1MiB")},
    # More paths `vaultd run --isolate` keeps from the command (DESIGN 12).
    "run": {"hide": (_str_list, [])},
    # The daemon's page (DESIGN 15) and the lifetime of the session `vaultd ui` mints.
    "ui": {"enabled": (_bool, True), "session_ttl": (_duration, "1h")},
}
# Sections that are tables of tables, parsed by their own modules.
_NAMED_TABLES = ("services", "prices", "policies", "sources")
# A named policy's name: what ``--policy NAME`` takes.
_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Config:
    config_file: Path | None
    host: str
    port: int
    allowed_hosts: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    idle_timeout: int
    data_dir: Path
    key_file: Path
    default_ttl: int
    max_ttl: int
    connect_timeout: int
    read_timeout: int
    max_request_body: int
    usage_flush_interval: int
    body_timeout: int
    pool_timeout: int
    max_session_concurrency: int
    audit_max_rows: int
    audit_max_age: int
    services: Mapping[str, Service]
    add_stream_usage: bool = True
    max_inspect_body: int = 1 << 20
    prices: Mapping[str, Price] = field(default_factory=dict)
    # [policies.NAME] tables as written: checked by ``core.policy.check_policy``
    # when ``--policy NAME`` copies one into a session (config sits below core).
    policies: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # Seconds a revoked or expired session is kept before the daemon prunes it.
    sessions_keep: int = 7 * 86400
    run_hide: tuple[str, ...] = ()
    ui_enabled: bool = True
    ui_session_ttl: int = 3600
    # [sources.NAME]: shared secrets engines the daemon reads credentials from (DESIGN 13).
    sources: Mapping[str, SourceSettings] = field(default_factory=dict)
    # ``load_config``'s config_path and data_dir arguments: a reload reads the
    # config again exactly as this one was read (``reload_config``).
    load_args: tuple[str | None, str | None] = field(default=(None, None), compare=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE_NAME


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    # The XDG spec says relative values are invalid and must be ignored.
    value = env.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    home = env.get("HOME", "")
    if not os.path.isabs(home):
        # An empty or relative $HOME would put the vault under / or the current
        # directory; the password database names the real one.
        home = pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / fallback


def config_home(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "vaultd"


def data_home(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "vaultd"


MAX_CONFIG_BYTES = 1024 * 1024


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            # Bounded: --config /dev/zero (or a huge file) must be an error, not an OOM.
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (base / path)


def parse_settings(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Every schema key, from ``doc`` or its default, parsed; unknown keys refused."""
    settings: dict[str, Any] = {}
    for section, table in doc.items():
        if section in _NAMED_TABLES:
            continue
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}] in config")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key in table:
            if key not in SCHEMA[section]:
                raise ConfigError(f"unknown key {key!r} in [{section}]")
    for section, keys in SCHEMA.items():
        table = doc.get(section, {})
        for key, (parse, default) in keys.items():
            value = table.get(key, default)
            settings[key] = None if value is None else parse(f"[{section}] {key}", value)
    services = doc.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError("[services] must be a table of [services.NAME] tables")
    settings["services"] = build_registry(services)
    settings["prices"] = parse_price_overrides(doc.get("prices", {}))
    settings["policies"] = _policies(doc.get("policies", {}))
    if settings["default_ttl"] > settings["max_ttl"]:
        raise ConfigError("[sessions] default_ttl must not be longer than max_ttl")
    if settings["session_ttl"] > settings["max_ttl"]:
        raise ConfigError("[ui] session_ttl must not be longer than [sessions] max_ttl")
    return settings


def _policies(value: object) -> dict[str, Mapping[str, object]]:
    if not isinstance(value, dict):
        raise ConfigError("[policies] must be a table of [policies.NAME] tables")
    for name, table in value.items():
        if not _POLICY_NAME.fullmatch(name):
            raise ConfigError(
                f"[policies] {name[:64]!r} is not a policy name (letters, digits, '_.-', 1-64)"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"[policies.{name}] must be a table (allow, deny, models, credential)"
            )
    return dict(value)


def load_config(
    config_path: str | None = None,
    data_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The effective configuration: flags over environment over file over defaults."""
    env = os.environ if env is None else env
    chosen = config_path or env.get("VAULTD_CONFIG") or None
    path = Path(chosen).expanduser() if chosen else config_home(env) / "config.toml"
    doc = _read_toml(path, explicit=chosen is not None)
    settings = parse_settings(doc)
    base = path.parent
    sources = parse_sources(doc.get("sources", {}), base, env)

    data = data_dir or env.get("VAULTD_DATA_DIR") or None
    if data:
        resolved_data = Path(data).expanduser().absolute()
    elif settings["data_dir"]:
        resolved_data = _resolve(base, settings["data_dir"]).absolute()
    else:
        resolved_data = data_home(env)

    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / SYSTEMD_KEY_CREDENTIAL).exists():
        key_file = Path(creds) / SYSTEMD_KEY_CREDENTIAL
    elif settings["key_file"]:
        key_file = _resolve(base, settings["key_file"]).absolute()
    else:
        key_file = config_home(env) / KEY_FILE_NAME

    return Config(
        config_file=path if path.exists() else None,
        host=settings["host"],
        port=settings["port"],
        allowed_hosts=settings["allowed_hosts"],
        allowed_origins=settings["allowed_origins"],
        idle_timeout=settings["idle_timeout"],
        data_dir=resolved_data,
        key_file=key_file,
        default_ttl=settings["default_ttl"],
        max_ttl=settings["max_ttl"],
        connect_timeout=settings["connect_timeout"],
        read_timeout=settings["read_timeout"],
        max_request_body=settings["max_request_body"],
        usage_flush_interval=settings["usage_flush_interval"],
        body_timeout=settings["body_timeout"],
        pool_timeout=settings["pool_timeout"],
        max_session_concurrency=settings["max_session_concurrency"],
        audit_max_rows=settings["max_rows"],
        audit_max_age=settings["max_age"],
        services=settings["services"],
        add_stream_usage=settings["add_stream_usage"],
        max_inspect_body=settings["max_inspect_body"],
        prices=settings["prices"],
        policies=settings["policies"],
        sessions_keep=settings["keep"],
        run_hide=settings["hide"],
        ui_enabled=settings["enabled"],
        ui_session_ttl=settings["session_ttl"],
        sources=sources,
        load_args=(config_path, data_dir),
    )


def reload_config(config: Config) -> Config:
    """The config read again as ``config`` was (same file, same overrides), now."""
    return load_config(*config.load_args)


# The Config attribute of each schema key whose name is not the key's own.
_ATTRIBUTES = {
    "max_rows": "audit_max_rows",
    "max_age": "audit_max_age",
    "keep": "sessions_keep",
    "hide": "run_hide",
    "enabled": "ui_enabled",
    "session_ttl": "ui_session_ttl",
}
# "[section] key" -> the Config attribute that holds it, for every schema key.
SETTING_ATTRIBUTES: Mapping[str, str] = {
    f"[{section}] {key}": _ATTRIBUTES.get(key, key)
    for section, keys in SCHEMA.items()
    for key in keys
}
# Where the daemon and a CLI may rightly differ (--data-dir, systemd's
# $CREDENTIALS_DIRECTORY): left out of the digest.
_PATH_SETTINGS = ("[storage] data_dir", "[crypto] key_file")


def _plain(value: object) -> object:
    """``value`` as JSON data: dataclasses and mappings as objects, paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _table(kind: str, name: str) -> str:
    # As it is written in the file: a name with a dot (or a price's "/") is quoted.
    return f"[{kind}.{name}]" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'[{kind}."{name}"]'


def setting_items(config: Config) -> dict[str, object]:
    """Every setting of ``config`` by the name it has in the file, as JSON data:
    ``"[proxy] read_timeout"`` for a key, ``"[services.openai]"`` for a table
    (built-in services too, as vaultd completes them). What a reload compares."""
    items: dict[str, object] = {
        name: _plain(getattr(config, attribute)) for name, attribute in SETTING_ATTRIBUTES.items()
    }
    for kind, tables in (
        ("services", config.services),
        ("prices", config.prices),
        ("policies", config.policies),
        ("sources", config.sources),
    ):
        for name, table in tables.items():
            items[_table(kind, name)] = _plain(table)
    return items


def config_digest(config: Config) -> str:
    """A SHA-256 over every setting but the paths: equal for a daemon and a CLI that
    read the same file, whichever --data-dir or key file each was given."""
    items = {k: v for k, v in setting_items(config).items() if k not in _PATH_SETTINGS}
    # default=str: a policy table may hold any TOML value (a date, say).
    text = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class LiveConfig:
    """The config a running daemon uses now: replaced whole when a reload (SIGHUP)
    succeeds. Held in the app from its start, since a started aiohttp app's own
    entries are not to be changed."""

    __slots__ = ("config", "digest", "pending_restart")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.digest = config_digest(config)
        # Keys the file changed that only a restart applies (their old values stay).
        self.pending_restart: tuple[str, ...] = ()

    def replace(self, config: Config, pending_restart: tuple[str, ...]) -> None:
        self.config = config
        self.digest = config_digest(config)
        self.pending_restart = pending_restart
