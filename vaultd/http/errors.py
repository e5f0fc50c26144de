"""Errors that only an HTTP request can cause: each carries the status it is rendered with.

The errors any layer raises (``NotFound``, ``ValidationError``, ...) live in
``vaultd.errors``; these name what is wrong with a request as HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable

from vaultd.errors import VaultdError


class MalformedRequest(VaultdError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class ForbiddenHost(VaultdError):
    status = 403
    slug = "forbidden-host"
    title = "Host not allowed"


class ForbiddenOrigin(VaultdError):
    status = 403
    slug = "forbidden-origin"
    title = "Origin not allowed"


class MethodNotAllowed(VaultdError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"

    def __init__(self, message: str, *, allowed: Iterable[str]) -> None:
        super().__init__(message)
        self.allowed = sorted(allowed)


class PayloadTooLarge(VaultdError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(VaultdError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InternalError(VaultdError):
    status = 500
    slug = "internal-error"
    title = "Internal server error"


class VaultUnavailable(VaultdError):
    """The vault's files or database failed on the server side; not the client's doing."""

    status = 503
    slug = "vault-unavailable"
    title = "Vault unavailable"
