"""The one family of errors vaultd raises for anything a user or client can cause.

Each class carries the HTTP status it maps to (the API renders it as an RFC 9457
problem) and its message is a single line fit for the CLI. This module must not
import aiohttp: the CLI uses it for verbs that never touch HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class FieldError:
    """One validation failure: a JSON pointer into the request body and what is wrong."""

    pointer: str
    message: str
    # The message says what it is about ("unknown service 'x'"): its one-line
    # form needs no field name, which for a list item would be a bare "0:".
    whole: bool = False


def json_pointer(*parts: str) -> str:
    """An RFC 6901 JSON pointer to ``parts``: "~" and "/" inside a part are escaped."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class VaultdError(Exception):
    """Base class: ``str(err)`` is one line that never contains a secret or a token."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, message: str) -> None:
        # One line, always: a message that spans lines breaks the CLI contract
        # and could smuggle fake lines into logs.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)

    def problem_fields(self) -> dict[str, object]:
        """Fields this kind of error adds to its problem body (RFC 9457 extensions)."""
        return {}

    def problem_headers(self) -> dict[str, str]:
        """Headers this kind of error adds to its response (``Retry-After``, say)."""
        return {}


class ValidationError(VaultdError):
    status = 422
    slug = "validation-error"
    title = "Validation failed"

    def __init__(self, errors: list[FieldError] | FieldError) -> None:
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        super().__init__("; ".join(_describe(e) for e in self.errors))


class ErrorList:
    """The failures of several independent checks, raised together at the end.

    A request with three wrong fields gets all three pointers in one answer,
    not one per round trip.
    """

    def __init__(self) -> None:
        self._errors: list[FieldError] = []

    def add(self, pointer: str, message: str) -> None:
        self._errors.append(FieldError(pointer, message))

    def check(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``fn(*args, **kwargs)``, or None with its ``ValidationError``'s failures kept."""
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            self._errors += exc.errors
            return None

    def raise_if_any(self) -> None:
        if self._errors:
            # A repeated query parameter or key fails the same way each time: say it once.
            raise ValidationError(list(dict.fromkeys(self._errors)))


def _describe(error: FieldError) -> str:
    field = error.pointer.rsplit("/", 1)[-1] if error.pointer and not error.whole else ""
    return f"{field}: {error.message}" if field else error.message


class NotFound(VaultdError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(VaultdError):
    status = 409
    slug = "conflict"
    title = "Conflict"

    def __init__(self, message: str, *, conflicting_resource_id: str | None = None) -> None:
        super().__init__(message)
        self.conflicting_resource_id = conflicting_resource_id


class AmbiguousReference(VaultdError):
    """An id prefix that more than one record starts with.

    409, not 422: the reference is well formed, and would have been enough
    before the vault grew a second match.
    """

    status = 409
    slug = "ambiguous-reference"
    title = "Ambiguous reference"


class Unauthorized(VaultdError):
    status = 401
    slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(VaultdError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class ConfigError(VaultdError):
    """The configuration file or an override is wrong; the message names the key."""


class UnsafePermissions(VaultdError):
    """A file or directory that holds vault material is open to other users."""


class CryptoError(VaultdError):
    """A key does not open the vault, or a sealed value failed to open.

    Deliberately one class for every failure kind (wrong key, flipped byte,
    moved ciphertext, unknown version), as Fernet's ``InvalidToken`` is: callers
    cannot branch on which check failed, and nothing about the plaintext leaks.
    """


class StorageError(VaultdError):
    """The database file is missing, corrupt, locked or of an unknown schema."""


class ReadOnlySource(Conflict):
    """A write to a credential a remote source holds (DESIGN 13): change it there."""

    slug = "read-only-source"
    title = "Read-only source"
