"""The one place that turns an error into an HTTP response (RFC 9457 problem+json).

Every error, whether vaultd raised it (a ``VaultdError``, whose class carries
its status), aiohttp raised it (the router's 404 and 405, the 413 of
``client_max_size``) or nobody expected it, leaves through ``problem_response``
with the same fields, so clients need one parser and one test pins the shape.
"""

from __future__ import annotations

import re
import sqlite3
from http import HTTPStatus
from typing import Any

from aiohttp import web

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
from vaultd.http.errors import MethodNotAllowed, PayloadTooLarge
from vaultd.tokens import redact

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://vaultd.dev/problems/"
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


PROXY_PREFIX = "/proxy/"


def problem_body(error: VaultdError, request_id: str, *, proxied: bool = False) -> dict[str, Any]:
    """The RFC 9457 body of ``error``; ``proxied``: an answer vaultd makes on ``/proxy/``."""
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
    if proxied:
        # DESIGN 5: where the services' own SDKs look for the text they show
        # (the OpenAI SDK's exception reads error.message; a string there
        # leaves a bare "Error code: 429").
        body["error"] = {"message": detail, "type": error.slug, "code": error.slug}
    if isinstance(error, ValidationError):
        body["errors"] = [
            {"pointer": redact(e.pointer), "message": redact(e.message)} for e in error.errors
        ]
    if isinstance(error, Conflict) and error.conflicting_resource_id is not None:
        body["conflicting_resource_id"] = error.conflicting_resource_id
    body.update(error.problem_fields())
    return body


def problem_response(error: VaultdError, request_id: str, path: str = "") -> web.Response:
    """The problem response for ``error``, on the request to ``path`` (its raw path)."""
    body = problem_body(error, request_id, proxied=path.startswith(PROXY_PREFIX))
    response = web.json_response(body, status=error.status, content_type=PROBLEM_CONTENT_TYPE)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vaultd"'
    if isinstance(error, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(error.allowed)
    response.headers.update(error.problem_headers())
    return response
