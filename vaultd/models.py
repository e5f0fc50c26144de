"""The records vaultd keeps and the checks on every field that comes from outside.

Validators raise ``ValidationError`` with JSON pointers (``/name``,
``/metadata/team``) so the API can return them as ``errors[]`` and the CLI as
one line. The JSON shapes here are the API's (DESIGN 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vaultd.errors import ErrorList, FieldError, StorageError, ValidationError, json_pointer
from vaultd.services import SERVICE_NAME, closest_service, unknown_service

NAME_MAX = 255
SECRET_MAX = 16 * 1024
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
KNOWN_TYPES = ("api_key", "oauth_token", "basic_auth", "git_pat", "generic_secret")
# Types whose secrets a service issued: those never look like a placeholder or
# a line of shell, so such a "secret" is a paste gone wrong. Passwords people
# chose (basic_auth, generic_secret, types of their own) may, and are stored as given.
ISSUED_TYPES = ("api_key", "oauth_token", "git_pat")
# The type is an open enum: the known ones above, or any short snake_case word.
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
HINT_MIN_SECRET = 20
# An id as ``uuid7`` writes it: lower-case hex, hyphenated.
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def now() -> int:
    return int(time.time())


_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)  # (milliseconds, 74-bit tail) of the last id made in this process


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) that also increases within a millisecond.

    Ids made in the same millisecond count up from a random start (RFC 9562
    6.2, method 2), so "oldest first" by (created_at, id) is creation order.
    """
    if hasattr(uuid, "uuid7"):  # Python 3.14+ does the same itself
        return str(uuid.uuid7())
    global _uuid7_last
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_tail = _uuid7_last
        if ms > last_ms:
            tail = int.from_bytes(os.urandom(10), "big") >> 6  # 74 random bits
        elif last_tail + 1 < 1 << 74:
            ms, tail = last_ms, last_tail + 1
        else:
            ms, tail = last_ms + 1, 0
        _uuid7_last = (ms, tail)
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76  # version 7
        | (tail >> 62) << 64
        | 0x2 << 62  # RFC 9562 variant
        | (tail & ((1 << 62) - 1))
    )
    return format_uuid(value)


def format_uuid(value: int) -> str:
    """A 128-bit ``value`` as a UUID string: 8-4-4-4-12 lower-case hex digits.

    Formatted directly: ``str(uuid.UUID(int=value))`` costs more than making
    the value, and a request id is made for every request.
    """
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def remote_id(source: str, service: str, name: str) -> str:
    """The id of a credential a remote source holds: the same on every start and
    every machine, so usage, limits and audit rows keep pointing at it.

    A UUID version 8 (RFC 9562: "custom") made of a SHA-256 of the three names;
    local ids are version 7, so ``is_remote_id`` tells the two apart by form.
    """
    digest = hashlib.sha256(f"vaultd-remote\0{source}\0{service}\0{name}".encode()).digest()
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF << 76)) | 0x8 << 76  # version 8
    value = (value & ~(0x3 << 62)) | 0x2 << 62  # RFC 9562 variant
    return format_uuid(value)


def is_remote_id(credential_id: str) -> bool:
    return len(credential_id) == 36 and credential_id[14] == "8"


def hint_for(secret: str) -> str | None:
    """First 3 and last 4 characters, only for secrets long enough to spare them."""
    if len(secret) < HINT_MIN_SECRET:
        return None
    return f"{secret[:3]}...{secret[-4:]}"


def _printable(text: str) -> bool:
    return text.isprintable()


def check_service_name(value: object, pointer: str = "/service") -> str:
    if not isinstance(value, str) or not SERVICE_NAME.fullmatch(value):
        raise ValidationError(
            FieldError(
                pointer,
                "must be 1 to 63 of a-z 0-9 . _ - starting with a letter or digit",
            )
        )
    return value


def check_known_service(value: object, known: Iterable[str], pointer: str = "/service") -> str:
    """The name of a service vaultd knows, or the one unknown-service message.

    The value is echoed only when it is a service name or a near miss of
    one: a client that sent something else in this field (a key, even) gets
    the naming rule instead.
    """
    names = list(known)
    if isinstance(value, str) and value in names:
        return value
    near_miss = isinstance(value, str) and closest_service(value, names) is not None
    name = value if near_miss else check_service_name(value, pointer)  # raises if no name
    raise ValidationError(FieldError(pointer, unknown_service(str(name), names), whole=True))


def check_name(value: object, pointer: str = "/name") -> str:
    if not isinstance(value, str):
        raise ValidationError(FieldError(pointer, "must be a string"))
    if not 1 <= len(value) <= NAME_MAX:
        raise ValidationError(FieldError(pointer, f"must be 1 to {NAME_MAX} characters"))
    if not _printable(value):
        raise ValidationError(FieldError(pointer, "must not contain control characters"))
    return value


def check_type(value: object, pointer: str = "/type") -> str:
    if not isinstance(value, str) or not _TYPE.fullmatch(value):
        raise ValidationError(
            FieldError(pointer, f"must be a lower-case word such as {', '.join(KNOWN_TYPES)}")
        )
    return value


# ``export NAME=...`` or a .env line's ``NAME=...``. Bare names are upper case,
# as variables are, and the "=" must be followed by something other than "=":
# a base64 key ends in "=" or "==" and has no other.
_ASSIGNMENT = re.compile(r"(?:export\s+[A-Za-z_][A-Za-z0-9_]*|[A-Z_][A-Z0-9_]*)=[^=]")
# YOUR_KEY, YOUR_API_KEY, your-openai-token, sk-YOUR_SECRET_HERE: "your" at the
# start of a word, then a word ending in key, token or secret.
_YOUR_KEY = re.compile(r"(?i)(?:^|[^a-z0-9])your[-_]?[a-z0-9_-]*?(?:key|token|secret)")
# xxxx, sk-xxxxxxxx, sk-proj-XXXX, ghp_****: a prefix, then only x's or stars.
_FILLER = re.compile(r"(?i)(?:[a-z0-9]+[-_])*(?:x{3,}|\*{3,})")


def secret_mistake(value: str, kind: str = "api_key") -> str | None:
    """What makes ``value`` something other than an issued key, in words that never quote it.

    None when it may be one, and always for types whose secrets people choose
    (``ISSUED_TYPES``). Checked by the API and the CLI alike.
    """
    if kind not in ISSUED_TYPES:
        return None
    if _ASSIGNMENT.match(value):
        return "looks like a NAME=value line (from a .env file or an export), not the key alone"
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return "is wrapped in quotes, which would be sent as part of the key"
    if "..." in value or "\u2026" in value:
        return "looks like a placeholder (it contains ...), not a key"
    if value.startswith("<") and value.endswith(">"):
        return "looks like a placeholder (it is wrapped in < >), not a key"
    if _YOUR_KEY.search(value):
        return "looks like a placeholder (YOUR_..._KEY), not a key"
    if _FILLER.fullmatch(value):
        return "looks like a placeholder (only x's or *'s after its prefix), not a key"
    return None


def check_secret(value: object, pointer: str = "/secret", *, kind: object = "api_key") -> str:
    """A secret to seal; ``kind``, the credential's type, says whether it must look issued."""
    if not isinstance(value, str):
        raise ValidationError(FieldError(pointer, "must be a string"))
    if not value:
        raise ValidationError(FieldError(pointer, "must not be empty"))
    if len(value) > SECRET_MAX:
        raise ValidationError(FieldError(pointer, f"must be at most {SECRET_MAX} characters"))
    # A newline in a key would let it inject headers into the upstream request.
    if not _printable(value):
        raise ValidationError(FieldError(pointer, "must not contain control characters"))
    if value != value.strip():
        raise ValidationError(FieldError(pointer, "must not start or end with white space"))
    mistake = secret_mistake(value, kind) if isinstance(kind, str) else None
    if mistake is not None:
        raise ValidationError(FieldError(pointer, f"{mistake}; send the key itself"))
    return value


def check_metadata(value: object, pointer: str = "/metadata") -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError(FieldError(pointer, "must be an object of strings"))
    if len(value) > METADATA_MAX_KEYS:
        raise ValidationError(FieldError(pointer, f"must have at most {METADATA_MAX_KEYS} keys"))
    errors = ErrorList()
    for key, item in value.items():
        where = pointer + json_pointer(str(key))
        if not isinstance(key, str) or not 1 <= len(key) <= METADATA_KEY_MAX:
            errors.add(where, f"keys must be 1 to {METADATA_KEY_MAX} characters")
        elif not _printable(key):
            errors.add(where, "keys must not contain control characters")
        if not isinstance(item, str):
            errors.add(where, "must be a string")
        elif len(item) > METADATA_VALUE_MAX:
            errors.add(where, f"must be at most {METADATA_VALUE_MAX} characters")
        elif not _printable(item):
            errors.add(where, "must not contain control characters")
    errors.raise_if_any()
    return dict(value)


def check_expires_at(value: object, pointer: str = "/expires_at") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**53:
        raise ValidationError(FieldError(pointer, "must be Unix seconds (an integer) or null"))
    if value <= now():
        raise ValidationError(FieldError(pointer, "must be in the future"))
    return value


# Limits (DESIGN 10). Counts are integers; a cost is US dollars. The bounds
# keep every value exact in a float and in JSON (2**53) and far above any
# real use; a zero limit would refuse everything (revoke the session instead).
SESSION_LIMITS: Mapping[str, type] = {
    "max_requests": int,
    "max_tokens": int,
    "max_cost_usd": float,
    "rpm": int,
    "concurrency": int,
}
CREDENTIAL_LIMITS: Mapping[str, type] = {
    "max_requests_per_day": int,
    "max_tokens_per_day": int,
    "max_cost_usd_per_day": float,
}
LIMIT_MAX_COUNT = 10**15
LIMIT_MAX_USD = 1e9
# A millionth of a dollar: what a cost is shown and summed to.
LIMIT_MIN_USD = 1e-6
Limits = dict[str, int | float]


def check_limit(name: str, kind: type, value: object, pointer: str) -> int | float:
    """One limit's value: a positive integer for counts, a positive number of dollars."""
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationError(FieldError(pointer, "must be a positive integer"))
        if value > LIMIT_MAX_COUNT:
            raise ValidationError(FieldError(pointer, f"must be at most {LIMIT_MAX_COUNT}"))
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(FieldError(pointer, "must be a positive number of US dollars"))
    # NaN fails both comparisons, so it is refused here too.
    if not LIMIT_MIN_USD <= value <= LIMIT_MAX_USD:
        raise ValidationError(
            FieldError(pointer, f"must be from 0.000001 to {LIMIT_MAX_USD:.0f} US dollars")
        )
    return float(value)


def check_limits(
    value: object, known: Mapping[str, type], pointer: str = "/limits"
) -> Limits | None:
    """A ``limits`` object: each known name to its value; a null value or object clears.

    ``None`` means no limits at all (also for ``{}``, and when every value is null).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(
            FieldError(pointer, f"must be an object with any of {', '.join(known)}, or null")
        )
    errors = ErrorList()
    limits: Limits = {}
    for name, item in value.items():
        where = pointer + json_pointer(str(name))
        kind = known.get(name) if isinstance(name, str) else None
        if kind is None:
            errors.add(where, f"is not a limit; the limits are {', '.join(known)}")
        elif item is not None:
            checked = errors.check(check_limit, name, kind, item, where)
            if checked is not None:
                limits[name] = checked
    errors.raise_if_any()
    # In the order the names are listed, whatever order they came in.
    return {name: limits[name] for name in known if name in limits} or None


def stored_limits(row: Mapping[str, Any], known: Mapping[str, type]) -> Limits | None:
    """The ``limits`` column of a row read back from the (possibly edited) file."""
    if row["limits"] is None:
        return None
    try:
        return check_limits(stored_json(row, "limits", dict), known)
    except ValidationError:
        raise StorageError(
            f"the database row {str(row['id'])[:40]!r} is damaged: its limits are not "
            "valid; set them again (vaultd limit, or PATCH) or restore a backup"
        ) from None


def stored_json(
    row: Mapping[str, Any], column: str, kind: type[dict[Any, Any]] | type[list[Any]]
) -> Any:
    """A JSON column of a row read back from the file, which may have been edited.

    The database file is input too: a damaged value is one clear
    ``StorageError`` naming the row (the daemon answers 503), not a traceback.
    """
    try:
        value = json.loads(row[column])
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, kind) or (
        isinstance(value, list) and not all(isinstance(v, str) for v in value)
    ):
        raise StorageError(
            f"the database row {str(row['id'])[:40]!r} is damaged: its {column} is not "
            f"a JSON {kind.__name__}; restore a backup or remove the row"
        )
    return value


# A credential this close to its expiry is marked in `vaultd list` and is a
# `warn` line of `vaultd doctor` (DESIGN 14).
EXPIRY_WARNING = 14 * 86400


@dataclass(frozen=True)
class Credential:
    id: str
    service: str
    name: str
    type: str
    hint: str | None
    metadata: dict[str, str]
    is_default: bool
    created_at: int
    updated_at: int
    last_used_at: int | None
    use_count: int
    expires_at: int | None
    limits: Limits | None = None
    # "local", or the [sources.NAME] that holds it (DESIGN 13) with what it says
    # of it: {path, version, fetched_at, status}.
    source: str = "local"
    remote: Mapping[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Credential:
        return cls(
            id=row["id"],
            service=row["service"],
            name=row["name"],
            type=row["type"],
            hint=row["hint"],
            metadata=stored_json(row, "metadata", dict),
            is_default=bool(row["is_default"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            last_used_at=row["last_used_at"],
            use_count=row["use_count"],
            expires_at=row["expires_at"],
            limits=stored_limits(row, CREDENTIAL_LIMITS),
        )

    def expired(self, at: int | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now() if at is None else at)

    def expires_soon(self, at: int | None = None) -> bool:
        """Whether it expires within ``EXPIRY_WARNING`` (and has not yet): time to rotate it."""
        at = now() if at is None else at
        return (
            self.expires_at is not None
            and not self.expired(at)
            and self.expires_at <= at + EXPIRY_WARNING
        )

    def to_json(self) -> dict[str, Any]:
        """The API's shape (DESIGN 3). It has no field that could hold the secret."""
        return {
            "id": self.id,
            "service": self.service,
            "name": self.name,
            "type": self.type,
            "hint": self.hint,
            "metadata": dict(self.metadata),
            "is_default": self.is_default,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_used_at": self.last_used_at,
            "use_count": self.use_count,
            "expires_at": self.expires_at,
            "limits": None if self.limits is None else dict(self.limits),
            "source": self.source,
            "remote": None if self.remote is None else dict(self.remote),
        }
