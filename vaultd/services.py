"""The services vaultd can proxy to: built-ins, overridden or extended by config.

A service says where its API lives, how a key is presented to it (the auth
style), and which environment variables its SDKs read, for ``vaultd run``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from vaultd.errors import ConfigError

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
AUTH_STYLES = ("bearer", "header", "basic", "query")
# How vaultd reads the model and token usage from a service's answers (DESIGN 10).
USAGE_KINDS = ("openai", "anthropic", "gemini", "none")
# RFC 9110 token characters: anything else in a header name is an injection attempt.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_QUERY_PARAM = re.compile(r"[A-Za-z0-9._~-]{1,128}")


@dataclass(frozen=True)
class Service:
    name: str
    base_url: str
    auth: str = "bearer"
    header: str = "Authorization"
    template: str = "{secret}"
    query_param: str = "key"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    env_key: str | None = None
    env_base_url: str | None = None
    env_base_suffix: str = ""
    # Range and If-Range are dropped unless a service opts in: a client could
    # fetch an echoed key in slices that redaction never sees whole.
    allow_range: bool = False
    # The answer shape metering reads ("none": not metered; DESIGN 10).
    usage: str = "none"
    builtin: bool = False

    def to_json(self, credential_count: int, *, with_builtin: bool = False) -> dict[str, Any]:
        """The shape of ``GET /api/services`` and, ``with_builtin``, ``vaultd services --json``.

        Only where to reach it and how it authenticates: no header values, no template.
        """
        item: dict[str, Any] = {"name": self.name, "base_url": self.base_url, "auth": self.auth}
        if with_builtin:
            item["builtin"] = self.builtin
        item["credential_count"] = credential_count
        return item


def _builtin(name: str, base_url: str, **kw: Any) -> Service:
    return Service(name=name, base_url=base_url, builtin=True, **kw)


BUILTINS: Mapping[str, Service] = MappingProxyType(
    {
        s.name: s
        for s in (
            _builtin(
                "openai",
                "https://api.openai.com",
                env_key="OPENAI_API_KEY",
                env_base_url="OPENAI_BASE_URL",
                env_base_suffix="/v1",
                usage="openai",
            ),
            _builtin(
                "anthropic",
                "https://api.anthropic.com",
                auth="header",
                header="x-api-key",
                headers=MappingProxyType({"anthropic-version": "2023-06-01"}),
                env_key="ANTHROPIC_API_KEY",
                env_base_url="ANTHROPIC_BASE_URL",
                usage="anthropic",
            ),
            _builtin("github", "https://api.github.com", env_key="GITHUB_TOKEN"),
            _builtin(
                "gemini",
                "https://generativelanguage.googleapis.com",
                auth="header",
                header="x-goog-api-key",
                env_key="GEMINI_API_KEY",
                usage="gemini",
            ),
            _builtin(
                "mistral", "https://api.mistral.ai", env_key="MISTRAL_API_KEY", usage="openai"
            ),
            _builtin(
                "groq",
                "https://api.groq.com",
                env_key="GROQ_API_KEY",
                env_base_url="GROQ_BASE_URL",
                usage="openai",
            ),
            _builtin(
                "openrouter",
                "https://openrouter.ai/api",
                env_key="OPENROUTER_API_KEY",
                env_base_url="OPENROUTER_BASE_URL",
                env_base_suffix="/v1",
                usage="openai",
            ),
            _builtin(
                "huggingface",
                "https://huggingface.co",
                env_key="HF_TOKEN",
                env_base_url="HF_ENDPOINT",
            ),
        )
    }
)

# The keys a [services.NAME] table may hold, as documented in config.example.toml.
SERVICE_KEYS = tuple(f.name for f in fields(Service) if f.name not in ("name", "builtin"))


def closest_service(name: str, known: Iterable[str]) -> str | None:
    """The known service ``name`` is most likely a typo of (case aside: ``OpenAI``), if any."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1)
    return close[0] if close else None


def unknown_service(name: str, known: Iterable[str]) -> str:
    """The one message, for every verb and the API, about a service vaultd does not know.

    It names the nearest known service and where the whole list is.
    """
    close = closest_service(name, known)
    guess = f"; did you mean {close!r}?" if close else ""
    return f"unknown service {name!r}{guess} (vaultd services lists them)"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(where: str, url: str) -> str:
    """The URL, without a trailing slash, if it is safe to send keys to."""
    if any(ch in url for ch in "\r\n\t ") or not url.isprintable():
        raise ConfigError(f"{where} must not contain spaces or control characters")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{where} must be an https:// URL, not {url!r}")
    if parts.scheme == "http" and not is_loopback_host(host):
        # Plain HTTP would send the key readable to every network hop.
        raise ConfigError(f"{where} must use https:// (plain http:// is only for loopback hosts)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where} must not contain a user name or password")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigError(f"{where} must not contain a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port") from None
    return url.rstrip("/")


def config_string(
    where: str,
    value: object,
    *,
    empty: bool = True,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> str:
    """A string setting from the file or the environment, one rule for every key.

    Control characters are refused everywhere: a value can end up in a header,
    a log line or a terminal. ``what`` names ``pattern`` in the message.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {type(value).__name__}")
    if not value.isprintable():
        raise ConfigError(f"{where} must not contain control characters")
    if not empty and not value:
        raise ConfigError(f"{where} must not be empty")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(f"{where} must be {what}, not {value!r}")
    return value


def _setting(prefix: str, key: str, value: object) -> Any:
    """One key of a ``[services.NAME]`` table, checked: its value as ``Service`` holds it."""
    where = f"{prefix} {key}"
    if key == "base_url":
        return check_base_url(where, config_string(where, value))
    elif key == "auth":
        if value not in AUTH_STYLES:
            raise ConfigError(f"{where} must be one of {', '.join(AUTH_STYLES)}")
        return value
    elif key == "header":
        return config_string(where, value, pattern=_HEADER_NAME, what="an HTTP header name")
    elif key == "template":
        text = config_string(where, value)
        if text.count("{secret}") != 1 or text.replace("{secret}", "").count("{"):
            raise ConfigError(f"{where} must contain {{secret}} once and no other braces")
        return text
    elif key == "query_param":
        return config_string(where, value, pattern=_QUERY_PARAM, what="a query parameter name")
    elif key == "headers":
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of header names to values")
        return MappingProxyType(
            {
                config_string(
                    f"{where}.{k}", k, pattern=_HEADER_NAME, what="an HTTP header name"
                ): config_string(f"{where}.{k}", v)
                for k, v in value.items()
            }
        )
    elif key in ("env_key", "env_base_url"):
        return config_string(where, value, pattern=_ENV_NAME, what="an environment variable name")
    elif key == "usage":
        if value not in USAGE_KINDS:
            raise ConfigError(f"{where} must be one of {', '.join(USAGE_KINDS)}")
        return value
    elif key == "allow_range":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    elif key == "env_base_suffix":
        text = config_string(where, value)
        if text and not text.startswith("/"):
            raise ConfigError(f"{where} must start with /")
        return text.rstrip("/")
    else:
        raise ConfigError(f"unknown key {key!r} in {prefix}")


def build_service(name: str, table: object, base: Service | None) -> Service:
    """A service from its ``[services.NAME]`` table, laid over the built-in of that name."""
    prefix = f"[services.{name}]"
    if not SERVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"{prefix}: a service name is 1 to 63 of a-z 0-9 . _ - starting with a letter or digit"
        )
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix} must be a table")
    changes = {key: _setting(prefix, key, value) for key, value in table.items()}
    if base is not None:
        return replace(base, **changes)
    if "base_url" not in changes:
        raise ConfigError(f"{prefix} needs base_url (it is not a built-in service)")
    return Service(name=name, **changes)


def build_registry(tables: Mapping[str, object]) -> Mapping[str, Service]:
    """Built-ins plus every configured service, sorted by name."""
    registry = dict(BUILTINS)
    for name, table in tables.items():
        registry[name] = build_service(name, table, BUILTINS.get(name))
    return MappingProxyType(dict(sorted(registry.items())))
