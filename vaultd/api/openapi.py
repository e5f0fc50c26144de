"""The OpenAPI 3.1 document of the HTTP API, written out by hand.

Hand-written rather than generated from the routes so that it says what the
routes cannot (scopes, shapes, errors); ``tests/api/test_info.py`` keeps its
paths and methods equal to the routes the app really has, and checks each
operation's ``x-vaultd-scope`` against what the daemon enforces. The shapes
the paths refer to are in ``vaultd.api.schemas``.
"""

from __future__ import annotations

from typing import Any

from vaultd import __version__
from vaultd.api.schemas import SCHEMAS, Doc, ref
from vaultd.store.usage import MAX_GROUPS, USAGE_BY

_PROBLEM = {"$ref": "#/components/responses/Problem"}


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
    """One operation; ``scope`` is "none", a scope name, "admin-or-self", or "any"
    (any valid token).

    Each status in ``errors`` answers a plain problem, unless ``responses``
    describes it more closely.
    """
    if scope == "any":
        errors = (401, *errors)
    elif scope != "none":
        errors = (401, 403, *errors)
    problems = {str(code): _PROBLEM for code in sorted(errors)}
    op: Doc = {
        "operationId": op_id,
        "summary": summary,
        "x-vaultd-scope": scope,
        "security": [] if scope == "none" else [{"bearer": []}],
        **extra,
        "responses": {**problems, **responses},
    }
    return op


def _query(name: str, schema: Doc, description: str | None = None) -> Doc:
    param: Doc = {"name": name, "in": "query", "schema": schema}
    if description is not None:
        param["description"] = description
    return param


_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_MOMENT = {"type": "string", "pattern": "^([0-9]{1,12}|([0-9]{1,12}[smhdw])+)$"}
_SINCE = _query(
    "since", _MOMENT, 'Unix seconds, or a duration back from now such as "1h" (at most 100 years)'
)
_UNTIL = _query("until", _MOMENT, "exclusive; the same forms as since, later than it")

_LIST_PARAMS = [
    {"name": "service", "in": "query", "schema": {"type": "string"}},
    {"name": "type", "in": "query", "schema": {"type": "string"}},
    {"name": "source", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "starting_after", "in": "query", "schema": {"type": "string", "format": "uuid"}},
]
_NEXT_LINK = {
    "Link": {
        "description": 'the next page, as <...>; rel="next", when there is one',
        "schema": {"type": "string"},
    }
}

_PROXY_RESPONSES: Doc = {
    "default": {"description": "the upstream's own response, as it sent it"},
    "403": {
        "description": "a bad Host or Origin, a token without the proxy scope or the service,"
        " or (type slug unmeterable) a token or cost limit of the session or its credential"
        " and a request whose cost vaultd cannot count, or (type slug policy-denied) a request"
        " the session's policy refuses: its method and path, its model, its credential",
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    },
    "429": {
        "description": "a limit of the session or the credential is reached (type slug"
        " limit-exceeded, with limit, max and used), or the session has [proxy]"
        " max_session_concurrency requests in flight (too-many-requests); nothing went upstream",
        "headers": {
            "Retry-After": {
                "description": "seconds until the limit's window ends (rpm, a UTC day, a"
                " request in flight), when it does",
                "schema": {"type": "integer", "minimum": 1},
            },
            "x-should-retry": {
                "description": "false when the limit never resets (a lifetime budget)",
                "schema": {"const": "false"},
            },
        },
        "content": {
            "application/problem+json": {
                "schema": {"anyOf": [ref("LimitExceeded"), ref("Problem")]}
            }
        },
    },
    "503": {
        "description": "a remote source's credential cannot be served (DESIGN 13): type slug"
        " source-unavailable (the server is down, sealed or rate-limiting and the last good"
        " value is older than max_stale), source-unauthorized (the server refused vaultd's"
        " token), credential-deleted, or source-secret-invalid; nothing went upstream",
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    },
}

PATHS: Doc = {
    "/healthz": {
        "get": _operation(
            "healthz", "Liveness", "none", {"200": _json(ref("Health"), "running")}, ()
        )
    },
    "/api/credentials": {
        "get": _operation(
            "listCredentials",
            "Stored credentials, oldest first (metadata only)",
            "read",
            {
                "200": {
                    **_json({"type": "array", "items": ref("Credential")}, "one page"),
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
            {"201": _json(ref("Credential"), "stored")},
            (400, 409, 413, 415, 422),
            requestBody=_body(ref("CredentialCreate")),
        ),
    },
    "/api/credentials/{id}": {
        "parameters": [_ID_PARAM],
        "get": _operation(
            "getCredential",
            "One credential",
            "read",
            {"200": _json(ref("Credential"), "found")},
            (404,),
        ),
        "patch": _operation(
            "updateCredential",
            "Rename, replace metadata, set expiry, rotate the secret or make default",
            "admin",
            {"200": _json(ref("Credential"), "updated")},
            (400, 404, 409, 413, 415, 422),
            requestBody=_body(ref("CredentialUpdate")),
        ),
        "delete": _operation(
            "deleteCredential",
            "Delete a credential and its ciphertext",
            "admin",
            {"204": {"description": "deleted"}},
            (404, 409),
        ),
    },
    "/api/sessions": {
        "get": _operation(
            "listSessions",
            "Sessions (never their tokens)",
            "read",
            {"200": _json({"type": "array", "items": ref("Session")}, "all sessions")},
            (),
        ),
        "post": _operation(
            "createSession",
            "Mint a token (returned only in this response)",
            "admin",
            {"201": _json(ref("SessionCreated"), "created")},
            (400, 413, 415, 422),
            requestBody=_body(ref("SessionCreate")),
        ),
    },
    "/api/sessions/{id}": {
        "parameters": [_ID_PARAM],
        "patch": _operation(
            "updateSession",
            "Set or clear a session's limits and policy (its use so far stays)",
            "admin",
            {"200": _json(ref("Session"), "updated")},
            (400, 404, 413, 415, 422),
            requestBody=_body(ref("SessionUpdate")),
        ),
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
            {"200": _json({"type": "array", "items": ref("Service")}, "all services")},
            (),
        )
    },
    "/api/daemon": {
        "get": _operation(
            "getDaemon",
            "The daemon's version, its services this token may use, and its config's digest",
            "any",
            {"200": _json(ref("Daemon"), "the daemon")},
            (),
        )
    },
    "/api/audit": {
        "get": _operation(
            "listAudit",
            "Proxied requests, newest first",
            "read",
            {"200": _json({"type": "array", "items": ref("AuditEntry")}, "audit rows")},
            (422,),
            parameters=[
                _query("service", {"type": "string"}),
                _query("credential_id", {"type": "string"}),
                _query("session_id", {"type": "string"}),
                _query(
                    "status",
                    {"type": "string", "pattern": "^[1-5]([0-9]{2}|xx)$"},
                    "one status code (429), or a class of them (4xx)",
                ),
                _query(
                    "refused",
                    {"enum": ["true", "false"]},
                    "true: only requests vaultd refused; false: only those that went upstream",
                ),
                _SINCE,
                _UNTIL,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            ],
        )
    },
    "/api/usage": {
        "get": _operation(
            "listUsage",
            "Requests, tokens and cost of proxied calls that went upstream, grouped",
            "read",
            {
                "200": _json(
                    {"type": "array", "maxItems": MAX_GROUPS, "items": ref("UsageGroup")},
                    f"at most {MAX_GROUPS} groups: by day the newest days in date order,"
                    " otherwise the largest by cost, then by requests",
                )
            },
            (422,),
            parameters=[
                _query("by", {"enum": list(USAGE_BY), "default": "day"}, "day is the UTC date"),
                _SINCE,
                _UNTIL,
            ],
        )
    },
    "/metrics": {
        "get": _operation(
            "getMetrics",
            "Proxied requests, refusals, tokens and cost since start, requests in flight,"
            " credentials, active sessions and the usage writer's backlog, for Prometheus",
            "read",
            {
                "200": {
                    "description": "the Prometheus text format; labels never hold a token,"
                    " its prefix, a secret or a credential's or session's name",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            (),
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
                _PROXY_RESPONSES,
                (400, 404, 408, 413, 502, 504),
            )
            for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
        },
    },
    "/ui": {
        "get": _operation(
            "pageRedirect",
            "The page's address without its slash: a redirect to /ui/",
            "none",
            {
                "302": {
                    "description": "to /ui/",
                    "headers": {"Location": {"schema": {"const": "/ui/"}}},
                }
            },
            (404,),
        )
    },
    "/ui/": {
        "get": _operation(
            "page",
            "The daemon's page (DESIGN 15): it logs in with the token in its URL's fragment",
            "none",
            {"200": {"description": "the page", "content": {"text/html": {}}}},
            (404,),
        )
    },
    "/ui/{asset}": {
        "parameters": [
            {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": _operation(
            "pageAsset",
            "One of the page's scripts and style sheets, shipped in the package",
            "none",
            {
                "200": {
                    "description": "the file",
                    "content": {"text/javascript": {}, "text/css": {}},
                }
            },
            (404,),
        ),
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
                    "content": {"application/problem+json": {"schema": ref("Problem")}},
                }
            },
        },
    }
