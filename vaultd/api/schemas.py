"""The OpenAPI document's component schemas: the JSON shapes the API takes and gives.

Written by hand, as the paths are (``vaultd.api.openapi``); where a shape
follows from a rule in code (the limits, the usage groupings, the scopes), it
is built from that rule, so that the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaultd.core.policy import MAX_MODEL_CHARS, MAX_MODELS, MAX_RULE_CHARS, MAX_RULES
from vaultd.core.sessions import SCOPES
from vaultd.models import (
    CREDENTIAL_LIMITS,
    LIMIT_MAX_COUNT,
    LIMIT_MAX_USD,
    METADATA_MAX_KEYS,
    NAME_MAX,
    SESSION_LIMITS,
)
from vaultd.services import AUTH_STYLES
from vaultd.store.usage import UsageGroup

Doc = dict[str, Any]


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _limits(known: Mapping[str, type], description: str) -> Doc:
    """A ``limits`` object: each known limit optional; null, ``{}`` or a null value clears."""
    count = {"type": ["integer", "null"], "minimum": 1, "maximum": LIMIT_MAX_COUNT}
    usd = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": LIMIT_MAX_USD}
    return {
        "type": ["object", "null"],
        "description": description,
        "additionalProperties": False,
        "properties": {name: usd if kind is float else count for name, kind in known.items()},
    }


_NULL_INT = {"type": ["integer", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
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
_SESSION_LIMITS = ref("SessionLimits")
_POLICY = ref("Policy")
_RULES = {
    "type": ["array", "null"],
    "maxItems": MAX_RULES,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_RULE_CHARS},
}
_CREDENTIAL_LIMITS = ref("CredentialLimits")

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
            "limits": _CREDENTIAL_LIMITS,
            "source": {
                "type": "string",
                "description": '"local", or the [sources.NAME] that holds it (DESIGN 13)',
            },
            "remote": {
                "type": ["object", "null"],
                "description": "what its source says of it; null for a local credential",
                "required": ["path", "version", "fetched_at", "status"],
                "properties": {
                    "path": {"type": "string"},
                    "version": _NULL_INT,
                    "fetched_at": _NULL_INT,
                    "status": {
                        "type": "string",
                        "enum": [
                            "ok",
                            "stale",
                            "unauthorized",
                            "deleted",
                            "unreachable",
                            "invalid",
                        ],
                    },
                },
            },
        },
    },
    "CredentialLimits": _limits(CREDENTIAL_LIMITS, "limits per UTC day; null when there are none"),
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
            "limits": {**_CREDENTIAL_LIMITS, "description": "replaced wholesale; null clears"},
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
            "limits": _SESSION_LIMITS,
            "used": ref("Used"),
            "policy": _POLICY,
        },
    },
    "Policy": {
        "type": ["object", "null"],
        "description": "what the token may do (DESIGN 11); null when nothing beyond its"
        " scopes and services constrains it",
        "additionalProperties": False,
        "properties": {
            "allow": {
                **_RULES,
                "description": 'rules "METHODS PATH" (PATH a glob: * in a segment, ** across);'
                " when not empty, a request must match one",
            },
            "deny": {**_RULES, "description": "rules as in allow; one that matches refuses"},
            "models": {
                "type": ["array", "null"],
                "maxItems": MAX_MODELS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_CHARS},
                "description": "globs; a request that names a model must name one of these",
            },
            "credential": {
                "type": ["string", "null"],
                "description": "the one credential name the session may use per service",
            },
        },
    },
    "SessionLimits": _limits(
        SESSION_LIMITS,
        "max_* over the session's lifetime, rpm in any 60 s, concurrency in flight;"
        " null when there are none",
    ),
    "Used": {
        "type": "object",
        "description": "what the session has used so far: requests, input + output tokens",
        "required": ["requests", "tokens", "cost_usd"],
        "properties": {"requests": _COUNT, "tokens": _COUNT, "cost_usd": {"type": "number"}},
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
            "limits": _SESSION_LIMITS,
            "policy": _POLICY,
        },
    },
    "SessionUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "limits": {**_SESSION_LIMITS, "description": "replaced wholesale; null clears"},
            "policy": {**_POLICY, "description": "replaced wholesale; null clears"},
        },
    },
    "SessionCreated": {
        "allOf": [
            ref("Session"),
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
            "model": {"type": ["string", "null"]},
            "input_tokens": {**_NULL_INT, "description": "null: not metered"},
            "output_tokens": _NULL_INT,
            "cached_input_tokens": _NULL_INT,
            "cost_usd": {"type": ["number", "null"]},
            "refusal": {
                "type": ["string", "null"],
                "description": "null when the request went upstream; else why vaultd refused"
                ' it, a problem slug (and the limit): "limit-exceeded session.rpm"',
            },
            "usage_partial": {
                "type": ["integer", "null"],
                "enum": [0, 1, None],
                "description": "1 when the answer ended before its usage was whole (a stream"
                " cut off, an event too large to read): the tokens are those seen; null when"
                " not metered",
            },
        },
    },
    "UsageGroup": {
        "type": "object",
        "required": list(UsageGroup._fields),
        "properties": {
            "key": {
                "type": ["string", "null"],
                "description": "the UTC date (YYYY-MM-DD), session id, credential id, model or"
                " service; null for requests with no session, credential or model",
            },
            "requests": {**_COUNT, "description": "requests that went upstream"},
            "input_tokens": _COUNT,
            "output_tokens": _COUNT,
            "cached_input_tokens": _COUNT,
            "cost_usd": {"type": "number", "minimum": 0},
            "unmetered_requests": {**_COUNT, "description": "of requests, those with no usage"},
            "unpriced_requests": {
                **_COUNT,
                "description": "of metered requests, those whose model has no price: their"
                " cost is not in cost_usd",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
    },
    "Daemon": {
        "type": "object",
        "required": ["version", "services", "config_digest", "pending_restart"],
        "properties": {
            "version": {"type": "string"},
            "services": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the services the daemon has that this token may use",
            },
            "config_digest": {
                "type": ["string", "null"],
                "description": "SHA-256 of the config it runs with, paths aside (read scope;"
                " null otherwise): vaultd doctor compares it with the file's",
            },
            "pending_restart": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "keys the file changed that only a restart applies (read"
                " scope; null otherwise)",
            },
        },
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
            "error": {
                "description": "the same text as detail; on answers vaultd makes on /proxy/,"
                " an object whose message is that text (where the services' SDKs read it)",
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "required": ["message", "type", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "code": {"type": "string"},
                        },
                    },
                ],
            },
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
    "LimitExceeded": {
        "allOf": [
            ref("Problem"),
            {
                "type": "object",
                "required": ["limit", "max", "used"],
                "properties": {
                    "limit": {
                        "type": "string",
                        "description": 'the limit reached: "session.max_cost_usd",'
                        ' "session.rpm", "credential.max_tokens_per_day", ...',
                    },
                    "max": {"type": "number"},
                    "used": {"type": "number"},
                },
            },
        ]
    },
}
