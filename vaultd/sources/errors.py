"""What the proxy answers when a remote credential cannot be served (DESIGN 13).

All 503: the request was fine and another request may succeed once the
source is back, the secret readable again, or the credential restored; the
client's session and the local vault are untouched.
"""

from __future__ import annotations

from vaultd.errors import VaultdError


class SourceUnavailable(VaultdError):
    """The source is unreachable, sealed or rate-limiting, and the last good value
    is older than ``max_stale`` (or there never was one)."""

    status = 503
    slug = "source-unavailable"
    title = "Source unavailable"


class SourceUnauthorized(VaultdError):
    """The source refused vaultd's token (403) for this secret: it was dropped."""

    status = 503
    slug = "source-unauthorized"
    title = "Source refused access"


class CredentialDeleted(VaultdError):
    """The secret is gone from the source (404, or no longer listed): it was dropped."""

    status = 503
    slug = "credential-deleted"
    title = "Credential deleted at its source"


class SourceSecretInvalid(VaultdError):
    """The source holds something vaultd will not send as a key (too large, control
    characters, no ``secret`` field, a bad ``expires_at``)."""

    status = 503
    slug = "source-secret-invalid"
    title = "Secret at its source is not usable"
