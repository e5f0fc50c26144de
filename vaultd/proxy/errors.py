"""What the proxy refuses or fails with, beyond the errors every layer shares.

Each class carries its HTTP status; ``http.problems`` renders them like any
other ``VaultdError``.
"""

from __future__ import annotations

from vaultd.errors import NotFound, ValidationError, VaultdError


class BadProxyPath(ValidationError):
    status = 400
    slug = "bad-proxy-path"
    title = "Bad proxy path"


class BadProxyHeader(ValidationError):
    status = 400
    slug = "bad-proxy-header"
    title = "Bad header for the upstream"


class NoCredential(NotFound):
    """The proxy has no active credential to inject for this service (DESIGN 6.2)."""

    slug = "no-credential"
    title = "No credential"


class UpstreamUnreachable(VaultdError):
    status = 502
    slug = "upstream-unreachable"
    title = "Upstream unreachable"


class UpstreamTimeout(VaultdError):
    status = 504
    slug = "upstream-timeout"
    title = "Upstream timeout"


class UpstreamEncoding(VaultdError):
    """The upstream compressed its answer although vaultd asked for identity."""

    status = 502
    slug = "upstream-encoding"
    title = "Upstream answer cannot be checked"


class UpstreamInvalid(VaultdError):
    """The upstream's answer is not one HTTP allows (a status outside 100-599)."""

    status = 502
    slug = "upstream-invalid-answer"
    title = "Upstream answer is not valid HTTP"


class RequestBodyTimeout(VaultdError):
    """The client stopped sending the body it announced."""

    status = 408
    slug = "request-body-timeout"
    title = "Request body timeout"
