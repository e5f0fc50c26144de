"""What the proxy refuses or fails with, beyond the errors every layer shares.

Each class carries its HTTP status; ``http.problems`` renders them like any
other ``VaultdError``.
"""

from __future__ import annotations

from vaultd.core.limits import Refusal
from vaultd.errors import Forbidden, NotFound, ValidationError, VaultdError


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


class LimitExceeded(VaultdError):
    """A limit of the session or credential is reached (DESIGN 10): nothing went upstream."""

    status = 429
    slug = "limit-exceeded"
    title = "Limit exceeded"

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        wait = (
            f"; try again in {refusal.retry_after}s"
            if refusal.retry_after is not None
            else "; it does not reset: ask for a new session or a higher limit"
        )
        super().__init__(f"{refusal.limit} is {refusal.maximum} and {refusal.used} is used{wait}")

    @property
    def audit_reason(self) -> str:
        return f"{self.slug} {self.refusal.limit}"

    def problem_fields(self) -> dict[str, object]:
        return {"limit": self.refusal.limit, "max": self.refusal.maximum, "used": self.refusal.used}

    def problem_headers(self) -> dict[str, str]:
        if self.refusal.retry_after is None:
            # The official OpenAI and Anthropic SDKs retry a 429 unless told
            # not to; a spent budget does not come back by waiting.
            return {"x-should-retry": "false"}
        return {"Retry-After": str(self.refusal.retry_after)}


class Unmeterable(Forbidden):
    """A token or cost budget, and a request whose use vaultd cannot count."""

    slug = "unmeterable"
    title = "Request cannot be metered"


class PolicyDenied(Forbidden):
    """The session's policy (DESIGN 11) refuses the request: nothing went upstream."""

    slug = "policy-denied"
    title = "Denied by the session's policy"


class MethodOverrideRefused(VaultdError):
    """A method-override header under a policy's method rules (DESIGN 11: 400)."""

    status = 400
    slug = "method-override-refused"
    title = "Method override refused"
