"""The OpenAPI 3.1 document of the HTTP API, written out by hand.

Hand-written rather than generated from the routes so that it says what the
routes cannot (scopes, shapes, errors); ``tests/api/test_info.py`` keeps its
paths and methods equal to the routes the app really has, and checks each
operation's ``x-vaultd-scope`` against what the daemon enforces.
"""

from __future__ import annotations

from typing import Any

from vaultd import __version__
from vaultd.core.sessions import SCOPES
from vaultd.models import METADATA_MAX_KEYS, NAME_MAX
from vaultd.services import AUTH_STYLES

Doc = dict[str, Any]


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Doc, description: str) -> Doc:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: Doc) -> Doc:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(
    op_id: str,
    summary: str,
    scope: str,
    responses: Doc,
    errors: tuple[int, ...],
    **extra: Any,
) -> Doc:
    """One operation; ``scope`` is "none", a scope name, or "admin-or-self"."""
    if scope != "none":
        errors = (401, 403, *errors)
    op: Doc = {
        "operationId": op_id,
        "summary": summary,
        "x-vaultd-scope": scope,
        "security": [] if scope == "none" else [{"bearer": []}],
        **extra,
        "responses": {
            **responses,
            **{str(code): {"$ref": "#/components/responses/Problem"} for code in sorted(errors)},
        },
    }
    return op


_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_NULL_INT = {"type": ["integer", "null"]}
_SCOPES = {"type": "array", "items": {"enum": list(SCOPES)}}
_METADATA = {
    "type": "object",
    "maxProperties": METADATA_MAX_KEYS,
    "additionalProperties": {"type": "string", "maxLength": 500},
}
_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX}
_TTL = {
    "oneOf": [
        {"type": "string", "description": 'a duration such as "90s" or "8h", or "never"'},
        {"type": "integer", "minimum": 1, "description": "seconds"},
    ]
}

SCHEMAS: Doc = {
    "Credential": {
        "type": "object",
        "required": ["id", "service", "name", "created_at", "last_used_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "service": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string"},
            "hint": {"type": ["string", "null"]},
            "metadata": _METADATA,
            "is_default": {"type": "boolean"},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "last_used_at": _NULL_INT,
            "use_count": {"type": "integer"},
            "expires_at": _NULL_INT,
        },
    },
    "CredentialCreate": {
        "type": "object",
        "required": ["service", "name", "secret"],
        "additionalProperties": False,
        "properties": {
            "service": {"type": "string"},
            "name": _NAME,
            "secret": {"type": "string", "writeOnly": True},
            "type": {"type": "string", "default": "api_key"},
            "metadata": _METADATA,
            "expires_at": _NULL_INT,
        },
    },
    "CredentialUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "metadata": _METADATA,
            "expires_at": _NULL_INT,
            "secret": {"type": "string", "writeOnly": True},
            "is_default": {"type": "boolean"},
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "name", "key_prefix", "scopes", "services", "status"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "key_prefix": {"type": "string"},
            "scopes": _SCOPES,
            "services": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": ["active", "revoked", "expired"]},
            "created_at": {"type": "integer"},
            "last_used_at": _NULL_INT,
            "expires_at": _NULL_INT,
        },
    },
    "SessionCreate": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "scopes": _SCOPES,
            "services": {"type": "array", "items": {"type": "string"}},
            "ttl": _TTL,
        },
    },
    "SessionCreated": {
        "allOf": [
            _ref("Session"),
            {
                "type": "object",
                "required": ["token"],
                "properties": {"token": {"type": "string", "description": "shown only once"}},
            },
        ]
    },
    "Service": {
        "type": "object",
        "required": ["name", "base_url", "auth", "credential_count"],
        "properties": {
            "name": {"type": "string"},
            "base_url": {"type": "string"},
            "auth": {"enum": list(AUTH_STYLES)},
            "credential_count": {"type": "integer"},
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "at", "request_id", "service", "method", "path", "status"],
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "integer"},
            "request_id": {"type": "string"},
            "session_id": {"type": ["string", "null"]},
            "credential_id": {"type": ["string", "null"]},
            "service": {"type": "string"},
            "method": {"type": "string"},
            "path": {"type": "string", "description": "without the query string"},
            "status": {"type": "integer"},
            "duration_ms": {"type": "number"},
            "bytes_in": {"type": "integer"},
            "bytes_out": {"type": "integer"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
    },
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "request_id", "error"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "request_id": {"type": "string"},
            "error": {"type": "string", "description": "the same text as detail"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "conflicting_resource_id": {"type": "string"},
        },
    },
}

_LIST_PARAMS = [
    {"name": "service", "in": "query", "schema": {"type": "string"}},
    {"name": "type", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "starting_after", "in": "query", "schema": {"type": "string", "format": "uuid"}},
]
_NEXT_LINK = {
    "Link": {
        "description": 'the next page, as <...>; rel="next", when there is one',
        "schema": {"type": "string"},
    }
}

PATHS: Doc = {
    "/healthz": {
        "get": _operation(
            "healthz", "Liveness", "none", {"200": _json(_ref("Health"), "running")}, ()
        )
    },
    "/api/credentials": {
        "get": _operation(
            "listCredentials",
            "Stored credentials, oldest first (metadata only)",
            "read",
            {
                "200": {
                    **_json({"type": "array", "items": _ref("Credential")}, "one page"),
                    "headers": _NEXT_LINK,
                }
            },
            (422,),
            parameters=_LIST_PARAMS,
        ),
        "post": _operation(
            "createCredential",
            "Store a credential",
            "admin",
            {"201": _json(_ref("Credential"), "stored")},
            (400, 409, 413, 415, 422),
            requestBody=_body(_ref("CredentialCreate")),
        ),
    },
    "/api/credentials/{id}": {
        "parameters": [_ID_PARAM],
        "get": _operation(
            "getCredential",
            "One credential",
            "read",
            {"200": _json(_ref("Credential"), "found")},
            (404,),
        ),
        "patch": _operation(
            "updateCredential",
            "Rename, replace metadata, set expiry, rotate the secret or make default",
            "admin",
            {"200": _json(_ref("Credential"), "updated")},
            (400, 404, 409, 413, 415, 422),
            requestBody=_body(_ref("CredentialUpdate")),
        ),
        "delete": _operation(
            "deleteCredential",
            "Delete a credential and its ciphertext",
            "admin",
            {"204": {"description": "deleted"}},
            (404,),
        ),
    },
    "/api/sessions": {
        "get": _operation(
            "listSessions",
            "Sessions (never their tokens)",
            "read",
            {"200": _json({"type": "array", "items": _ref("Session")}, "all sessions")},
            (),
        ),
        "post": _operation(
            "createSession",
            "Mint a token (returned only in this response)",
            "admin",
            {"201": _json(_ref("SessionCreated"), "created")},
            (400, 413, 415, 422),
            requestBody=_body(_ref("SessionCreate")),
        ),
    },
    "/api/sessions/{id}": {
        "parameters": [_ID_PARAM],
        "delete": _operation(
            "revokeSession",
            "Revoke a session, effective on the next request",
            "admin-or-self",
            {"204": {"description": "revoked"}},
            (404,),
        ),
    },
    "/api/services": {
        "get": _operation(
            "listServices",
            "Services and how many credentials each has",
            "read",
            {"200": _json({"type": "array", "items": _ref("Service")}, "all services")},
            (),
        )
    },
    "/api/audit": {
        "get": _operation(
            "listAudit",
            "Proxied requests, newest first",
            "read",
            {"200": _json({"type": "array", "items": _ref("AuditEntry")}, "audit rows")},
            (422,),
            parameters=[
                {"name": "service", "in": "query", "schema": {"type": "string"}},
                {"name": "credential_id", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "since",
                    "in": "query",
                    "description": 'Unix seconds, or a duration back from now such as "1h"',
                    "schema": {"type": "string"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
        )
    },
    "/proxy/{service}/{path}": {
        "parameters": [
            {"name": "service", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": "the upstream path; may contain further slashes",
                "schema": {"type": "string"},
            },
        ],
        **{
            method: _operation(
                f"proxy{method.capitalize()}",
                "Forward to the service with the stored key injected; the answer is streamed",
                "proxy",
                {"default": {"description": "the upstream's own response, as it sent it"}},
                (400, 404, 413, 502, 504),
            )
            for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
        },
    },
    "/api/openapi.json": {
        "get": _operation(
            "openapi",
            "This document",
            "none",
            {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            (),
        )
    },
}


def openapi_document() -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vaultd",
            "version": __version__,
            "description": "Local credential vault and proxy. Errors are RFC 9457 problems.",
        },
        "servers": [{"url": "http://127.0.0.1:3978"}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "responses": {
                "Problem": {
                    "description": "an error (RFC 9457)",
                    "content": {"application/problem+json": {"schema": _ref("Problem")}},
                }
            },
        },
    }
