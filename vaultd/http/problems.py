"""The one place that turns an error into an HTTP response (RFC 9457 problem+json).

Every error, whether vaultd raised it (a ``VaultdError``, whose class carries
its status), aiohttp raised it (the router's 404 and 405, the 413 of
``client_max_size``) or nobody expected it, leaves through ``problem_response``
with the same fields, so clients need one parser and one test pins the shape.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from vaultd.core.sessions import KEY_PREFIX_LEN, TOKEN_PREFIX
from vaultd.errors import (
    ConfigError,
    Conflict,
    CryptoError,
    NotFound,
    StorageError,
    UnsafePermissions,
    ValidationError,
    VaultdError,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://vaultd.dev/problems/"
# Looser than sessions.TOKEN_RE on purpose: a truncated or padded token is
# still a secret worth hiding.
_TOKEN_LIKE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]+")
# What ``redact_path`` leaves unescaped when it encodes a path again: RFC
# 3986's sub-delimiters, ":", "@" and "/", and "[]" of "[REDACTED]".
_PATH_SAFE = "/:@!$&'()*+,;=[]"


def redact(text: str) -> str:
    """``text`` with anything shaped like a session token cut to its key prefix."""
    return _TOKEN_LIKE.sub(lambda m: m.group(0)[:KEY_PREFIX_LEN] + "[REDACTED]", text)


def redact_path(raw: str) -> str:
    """A still percent-encoded request path, for a log line or an audit row.

    Tokens are cut as by ``redact``, also one the client percent-encoded
    (``fn%5Fsess%5F...``) to slip past a plain match. Then the decoded,
    redacted path is encoded again: decoded, a ``%0a`` would forge a line.
    """
    if "%" in raw:
        decoded = unquote(raw, errors="replace")
        if TOKEN_PREFIX in decoded:
            scrubbed = redact(decoded)
            if scrubbed != decoded:
                return quote(scrubbed, safe=_PATH_SAFE)
    # "sess" is in every token prefix: most paths skip the regex altogether.
    return redact(raw) if "sess" in raw else raw


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


# Server-side state problems: their messages name files (the key's path among
# them), which are the daemon log's business, not the client's.
SERVER_SIDE = (CryptoError, StorageError, ConfigError, UnsafePermissions, sqlite3.Error)


def from_http_exception(exc: web.HTTPException) -> VaultdError:
    """aiohttp's own errors (routing, body size) as vaultd problems."""
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("there is no endpoint at this path")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        return MethodNotAllowed(
            f"this endpoint accepts {', '.join(allowed)}, not {exc.method}", allowed=allowed
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the request body is larger than this endpoint accepts")
    # Anything else aiohttp may raise keeps its status under a generic slug.
    return status_problem(exc.status, exc.reason or HTTPStatus(exc.status).phrase)


def status_problem(status: int, detail: str) -> VaultdError:
    """A problem for a bare status code, titled and slugged by its reason phrase."""
    phrase = HTTPStatus(status).phrase
    error = VaultdError(detail)
    error.status = status
    error.title = phrase
    error.slug = re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")
    return error


def problem_body(error: VaultdError, request_id: str) -> dict[str, Any]:
    detail = redact(error.message)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": detail,
        "request_id": request_id,
        # Same text as detail, for clients that only read a plain "error" field.
        "error": detail,
    }
    if isinstance(error, ValidationError):
        body["errors"] = [
            {"pointer": redact(e.pointer), "message": redact(e.message)} for e in error.errors
        ]
    if isinstance(error, Conflict) and error.conflicting_resource_id is not None:
        body["conflicting_resource_id"] = error.conflicting_resource_id
    return body


def problem_response(error: VaultdError, request_id: str) -> web.Response:
    response = web.json_response(
        problem_body(error, request_id), status=error.status, content_type=PROBLEM_CONTENT_TYPE
    )
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vaultd"'
    if isinstance(error, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(error.allowed)
    return response
