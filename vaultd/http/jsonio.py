"""JSON in and out of the API: strict bodies, checked query parameters.

Every way a body can be wrong maps to one status: not JSON at all is 400
(malformed), JSON of the wrong shape is 422 with a pointer per field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from vaultd.errors import ErrorList, FieldError, ValidationError, json_pointer
from vaultd.http.errors import MalformedRequest
from vaultd.units import parse_moment

# Bounded, so that int() never meets a thousand-digit string.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are not JSON (RFC 8259); Python accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 leaves duplicate names to the parser; Python keeps the last,
    # other parsers the first. A body that two readers would read two ways
    # (a check on one value, a use of the other) is refused instead.
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _DuplicateKey
    return data


async def read_object(
    request: web.Request, *, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object with no unknown and no missing fields.

    The body size is capped by the app's ``client_max_size`` (413 from aiohttp,
    rendered as a problem); the Content-Type was checked by the guard.
    """
    raw = await request.read()
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        raise MalformedRequest("the body names a field twice in one object") from None
    except (ValueError, RecursionError):
        # ValueError covers bad syntax, bad UTF-8 and over-long integers;
        # RecursionError a body of a million nested brackets.
        raise MalformedRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError(FieldError("", "the body must be a JSON object"))
    errors = ErrorList()
    for key in data:
        if key not in allowed:
            errors.add(json_pointer(key), "is not a known field")
    for key in required:
        if key not in data:
            errors.add(json_pointer(key), "is required")
    errors.raise_if_any()
    return data


def query_params(query: MultiMapping[str], allowed: Collection[str]) -> dict[str, str]:
    """The query string as single values; unknown or repeated parameters are refused."""
    errors = ErrorList()
    params: dict[str, str] = {}
    for key in query:
        if key not in allowed:
            errors.add(json_pointer(key), "is not a known query parameter")
        elif len(query.getall(key)) > 1:
            errors.add(json_pointer(key), "must be given at most once")
        else:
            params[key] = query[key]
    errors.raise_if_any()
    return params


def limit_param(params: Mapping[str, str], maximum: int) -> int | None:
    """The ``limit`` query parameter, a whole number from 1 to ``maximum``; None if not given."""
    text = params.get("limit")
    if text is None:
        return None
    if _WHOLE_NUMBER.fullmatch(text) and 1 <= int(text) <= maximum:
        return int(text)
    raise ValidationError(FieldError("/limit", f"must be a whole number from 1 to {maximum}"))


def moment_param(params: Mapping[str, str], name: str, now: int) -> int | None:
    """A point-in-time query parameter (``since``, ``until``): Unix seconds, or a
    duration back from ``now`` such as ``7d``; None if not given."""
    text = params.get(name)
    if text is None:
        return None
    try:
        return parse_moment(text, now)
    except ValueError as exc:
        raise ValidationError(FieldError(json_pointer(name), str(exc))) from None
