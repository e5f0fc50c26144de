"""Ask OpenAI for a streamed completion's usage (``stream_options.include_usage``).

OpenAI streams carry no usage unless the request asks for it. For a streamed
``POST .../chat/completions`` (or legacy ``.../completions``) that does not,
vaultd adds ``"stream_options": {"include_usage": true}``, and the meter takes
out what that adds to the answer (``Meter(strip_usage_chunk=True)``).

The edit is as small as it can be: when the request has no ``stream_options``
the member is inserted right after the opening brace and every other byte
stays. When it has one without ``include_usage`` (or with it false), the body
is serialised again, which changes nothing the API reads.

A body this module cannot read with certainty is left alone (``unreadable``):
the proxy forwards it untouched and counts the answer unmetered. That covers
what JSON parsers disagree on (duplicate keys, where one parser takes the
first and another the last; NaN and Infinity, which are not JSON) as well as
plain nonsense, so the upstream never sees a body that means something other
than what the client sent.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from vaultd.proxy.metering.readers import model_name

_MEMBER = b'"stream_options":{"include_usage":true},'


class StreamUsage(NamedTuple):
    body: bytes | None
    """The body to send instead, or None to send the original."""
    added: bool
    """include_usage was added: the answer's usage chunk is vaultd's to remove."""
    unreadable: bool
    """The body could not be read with certainty, and was left alone."""
    model: str | None = None
    """The model the body names (for an estimate when the answer does not say)."""


_UNREADABLE = StreamUsage(None, False, True)


def responses_background(body: bytes) -> bool:
    """Whether a ``/v1/responses`` body asks to run in the background, or cannot be read.

    A background response answers "queued" without usage; its output is
    fetched later, unmetered. Under a budget either is refused.
    """
    try:
        obj = _strict(body)
    except _Unreadable:
        return True
    return type(obj) is not dict or obj.get("background", False) is not False


class _Unreadable(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Unreadable("duplicate key")
    return obj


def _constant(name: str) -> Any:
    raise _Unreadable(name)  # NaN, Infinity, -Infinity


def _strict(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _Unreadable from e


def add_stream_usage(body: bytes, document: dict[str, Any] | None = None) -> StreamUsage:
    """``body`` with ``stream_options.include_usage`` set, when it streams without it.

    ``document``: ``body`` already read by a reader as strict as this one
    (every key once, no NaN or Infinity), so as not to parse it twice; it may
    be changed here.
    """
    try:
        return _add(body, document)
    except _Unreadable:
        return _UNREADABLE


def _add(body: bytes, document: dict[str, Any] | None) -> StreamUsage:
    obj = _strict(body) if document is None else document
    if type(obj) is not dict:
        raise _Unreadable("not an object")
    model = model_name(obj.get("model"))
    unchanged = StreamUsage(None, False, False, model)
    stream = obj.get("stream", False)
    if type(stream) is not bool:
        raise _Unreadable("stream")
    if not stream:
        return unchanged
    if "stream_options" not in obj:
        return _inserted(body, obj)._replace(model=model)
    options = obj["stream_options"]
    # null is the API's own "not given"; anything else but an object is nonsense.
    if options is None:
        options = {}
    elif type(options) is not dict:
        raise _Unreadable("stream_options")
    include = options.get("include_usage", False)
    if type(include) is not bool:
        raise _Unreadable("include_usage")
    if include:
        return unchanged
    obj["stream_options"] = {**options, "include_usage": True}
    return StreamUsage(_dumps(obj), True, False, model)


def _inserted(body: bytes, obj: dict[str, Any]) -> StreamUsage:
    brace = body.index(b"{")  # the object parsed, so its brace comes first after space
    edited = body[: brace + 1] + _MEMBER + body[brace + 1 :]
    # The object has "stream", so the comma is followed by a member. Checked all
    # the same: a body that does not read back as the original plus the new
    # member is not sent.
    if _strict(edited) != {"stream_options": {"include_usage": True}, **obj}:
        raise _Unreadable("insertion")
    return StreamUsage(edited, True, False)


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape: keep it escaped
        return json.dumps(obj, separators=(",", ":")).encode("ascii")
