"""KV v2 paths and answers, without HTTP: what is asked and what an answer may hold.

Every URL path is built here from segments that passed ``check_segment``:
those from the config (at load) and those a listing returns (here, before
any is used). A segment that fails is reported and skipped: a request for
it is never made, so the server never sees (or audits) it.

An answer is checked before anything in it is kept: the shape, the secret
(``check_secret``'s rules for a key: printable, at most 16 KiB, no white
space at its ends) and the metadata. The messages never quote a secret.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vaultd.errors import ValidationError
from vaultd.models import (
    CREDENTIAL_LIMITS,
    Limits,
    check_limit,
    check_metadata,
    check_secret,
    check_type,
)
from vaultd.sourceconfig import SourceSettings, check_segment
from vaultd.sources.errors import SourceSecretInvalid, SourceUnavailable

# Keys one listing may hold before vaultd stops reading it: far above a
# team's keys, and a bound on the memory a hostile server can make it use.
MAX_KEYS = 1000
# custom_metadata keys that say something to vaultd rather than describe the key.
DEFAULT_KEY = "default"
EXPIRES_KEY = "expires_at"
RESERVED_KEYS = frozenset({DEFAULT_KEY, EXPIRES_KEY, *CREDENTIAL_LIMITS})


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on escaped (``\\x1b``):
    for what a server sent that reaches a log line or a problem's detail."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def list_path(settings: SourceSettings, service: str | None = None) -> str:
    """The URL path that lists the services (or one service's names) under the prefix."""
    tail = f"{settings.prefix}/" if service is None else f"{settings.prefix}/{service}/"
    return f"/v1/{settings.mount}/metadata/{tail}"


def secret_path(settings: SourceSettings, service: str, name: str) -> str:
    """The KV path of a credential (as ``remote.path`` shows it): ``prefix/service/name``."""
    return f"{settings.prefix}/{service}/{name}"


def data_path(settings: SourceSettings, service: str, name: str) -> str:
    """The URL path that reads a credential's current version."""
    return f"/v1/{settings.mount}/data/{secret_path(settings, service, name)}"


@dataclass(frozen=True)
class Listing:
    """One level of a listing: its folders and its entries (by checked segment), and
    how many keys were refused."""

    folders: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    refused: tuple[str, ...] = field(default=())


def parse_listing(body: object) -> Listing:
    """A ``LIST`` answer (``{"data": {"keys": [...]}}``); folders end with a slash."""
    keys = _dig(body, "data", "keys")
    if not isinstance(keys, list):
        raise SourceUnavailable("the source answered a listing without data.keys")
    folders: list[str] = []
    entries: list[str] = []
    refused: list[str] = []
    for key in keys[:MAX_KEYS]:
        if not isinstance(key, str):
            refused.append(repr(type(key).__name__))
            continue
        folder = key.endswith("/")
        segment = key[:-1] if folder else key
        if check_segment(segment) is not None:
            # Shown as repr, cut short: it may hold what a terminal acts on.
            refused.append(repr(segment[:40]))
            continue
        (folders if folder else entries).append(segment)
    if len(keys) > MAX_KEYS:
        refused.append(f"{len(keys) - MAX_KEYS} more keys past the first {MAX_KEYS}")
    return Listing(tuple(folders), tuple(entries), tuple(refused))


@dataclass(frozen=True)
class RemoteMeta:
    """What the source says about a credential's current version, checked (not its secret)."""

    version: int
    type: str
    metadata: dict[str, str]
    expires_at: int | None
    limits: Limits | None
    default: bool
    written_at: int | None


def parse_secret(body: object) -> tuple[str, RemoteMeta]:
    """A KV v2 read answer: ``data.data`` (``secret``, optional ``type``) and
    ``data.metadata`` (``version``, ``created_time``, ``custom_metadata``); the
    secret and what is known of it."""
    data = _dig(body, "data", "data")
    meta = _dig(body, "data", "metadata")
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise SourceSecretInvalid("the source's answer has no data.data and data.metadata")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SourceSecretInvalid("the source's answer has no version number")
    kind = data.get("type", "api_key")
    try:
        check_type(kind)
        value = check_secret(data.get("secret"), kind=kind)
    except ValidationError as exc:
        # The message says what is wrong with it, never what it is.
        what = "no secret field" if "secret" not in data else printable(str(exc))
        raise SourceSecretInvalid(f"its secret is not usable as a key: {what}") from None
    custom = meta.get("custom_metadata") or {}
    try:
        checked = check_metadata(custom, "/custom_metadata")
    except ValidationError as exc:
        raise SourceSecretInvalid(
            f"its custom_metadata is not valid: {printable(str(exc))}"
        ) from None
    return value, RemoteMeta(
        version=version,
        type=str(kind),
        metadata={k: v for k, v in checked.items() if k not in RESERVED_KEYS},
        expires_at=_expires_at(checked.get(EXPIRES_KEY)),
        limits=_limits(checked),
        default=checked.get(DEFAULT_KEY, "").lower() == "true",
        written_at=_moment(meta.get("created_time")),
    )


def _expires_at(text: str | None) -> int | None:
    """``expires_at`` as Unix seconds or an RFC 3339 time. A value that cannot be read
    refuses the credential: an expiry that is ignored would let a dead key be sent."""
    if text is None:
        return None
    # isascii: "²".isdigit() is true, and int() refuses it.
    moment = int(text) if text.isascii() and text.isdigit() else _moment(text)
    if moment is None or not 0 < moment < 2**53:
        raise SourceSecretInvalid(
            "its custom_metadata expires_at is neither Unix seconds nor an RFC 3339 time"
        )
    return moment


def _limits(custom: Mapping[str, str]) -> Limits | None:
    """Daily caps a team sets on its key, as custom_metadata (``max_requests_per_day = "500"``)."""
    limits: Limits = {}
    for name, kind in CREDENTIAL_LIMITS.items():
        text = custom.get(name)
        if text is None:
            continue
        try:
            number: object = int(text) if kind is int else float(text)
            limits[name] = check_limit(name, kind, number, f"/custom_metadata/{name}")
        except (ValueError, ValidationError):
            raise SourceSecretInvalid(
                f"its custom_metadata {name} is not a positive number"
            ) from None
    return limits or None


def _moment(value: object) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        # Go writes nine digits of fraction; Python 3.11 reads at most six.
        head, dot, rest = value.partition(".")
        if not dot:
            return None
        zone = rest.lstrip("0123456789")
        try:
            parsed = datetime.datetime.fromisoformat(head + zone.replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def _dig(body: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body
