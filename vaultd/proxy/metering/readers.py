"""What an answer says about its usage, per provider shape, in one convention.

The counts (``Reading``) are the same for every provider; ``meter`` documents
the convention. Each reader takes decoded JSON; none trusts it: a count
that is not an int (bools are not), is negative, or is 2**53 or more makes the
whole reading invalid (``Invalid``), because a half-read answer would bill the
wrong amount without anyone noticing.

Stream readers (``OpenAIStream``, ``AnthropicStream``, ``GeminiStream``) only
keep the data of the few events that carry usage (``want`` is a substring
test on the raw event, so the events in between cost nothing) and decode
them once, when the reading is asked for.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import orjson

LIMIT = 1 << 53  # counts stay exact wherever a JSON number is read as a double
MODEL_MAX = 200


class Reading(NamedTuple):
    """One answer's usage, in the convention ``meter`` documents."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    complete: bool


# (input_tokens, output_tokens, cached_input_tokens, cache_write_tokens), in the
# convention ``meter`` documents. A plain tuple, not a NamedTuple: one is made
# for every metered answer, and a NamedTuple's Python-level ``__new__`` cost
# more than reading the counts did.
Counts = tuple[int, int, int, int]


class Invalid(Exception):
    """Usage was there but cannot be trusted."""


def decode(data: bytes | bytearray) -> Any:
    """UTF-8 JSON, or ``Invalid`` for anything that is not (bad UTF-8, too deep, ...).

    orjson, not the standard library's json: decoding the answer was about
    half of what metering a chat completion cost the proxy, and orjson does
    it in under half the time (bench/policy_cost.py --compare metering).
    It is as strict as the readers need or stricter: a NaN, a lone surrogate
    or more than 1024 levels are Invalid, and an integer past 64 bits reads
    as a float, which no count accepts.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:  # a ValueError, bad UTF-8 included
        raise Invalid from e


def model_name(value: Any) -> str | None:
    """A model string worth recording: 1 to 200 printable characters."""
    if type(value) is str and 0 < len(value) <= MODEL_MAX and value.isprintable():
        return value
    return None


def _count(usage: dict[str, Any], key: str, *, required: bool = False) -> int:
    value = usage.get(key)
    if value is None:  # absent, or null: some providers write null for "none"
        if required:
            raise Invalid(key)
        return 0
    if type(value) is not int or not 0 <= value < LIMIT:
        raise Invalid(key)
    return value


def _counts(inputs: int, outputs: int, cached: int, written: int) -> Counts:
    # Cached reads and cache writes are parts of the input: more of them than
    # input would make the uncached remainder negative, and its cost with it.
    if inputs >= LIMIT or outputs >= LIMIT or cached + written > inputs:
        raise Invalid("inconsistent counts")
    return inputs, outputs, cached, written


def openai_usage(usage: Any, *, embeddings: bool = False) -> Counts:
    """Chat and legacy completions (``prompt_tokens``) or ``/v1/responses`` (``input_tokens``).

    Both input counts already include cached tokens, both output counts
    reasoning tokens. ``cache_write_tokens`` is in OpenAI's current API
    reference (``*_tokens_details.cache_write_tokens``), so it is read where
    present. Embeddings answers have no completion tokens at all.
    """
    # Unrolled (``_count``'s rules, inline): this runs for every metered OpenAI
    # answer, and its calls were most of what reading the usage cost.
    if type(usage) is not dict:
        raise Invalid("usage")
    if "prompt_tokens" in usage or "input_tokens" not in usage:
        in_key, out_key, details_key = _CHAT_KEYS
        optional_output = embeddings
    else:
        in_key, out_key, details_key = _RESPONSES_KEYS
        optional_output = False
    inputs = usage.get(in_key)
    if type(inputs) is not int or not 0 <= inputs < LIMIT:
        raise Invalid(in_key)
    outputs = usage.get(out_key)
    if outputs is None and optional_output:
        outputs = 0
    elif type(outputs) is not int or not 0 <= outputs < LIMIT:
        raise Invalid(out_key)
    details = usage.get(details_key)
    if details is None:
        return inputs, outputs, 0, 0
    if type(details) is not dict:
        raise Invalid(details_key)
    cached = details.get("cached_tokens")
    if cached is None:
        cached = 0
    elif type(cached) is not int or not 0 <= cached < LIMIT:
        raise Invalid("cached_tokens")
    written = details.get("cache_write_tokens")
    if written is None:
        written = 0
    elif type(written) is not int or not 0 <= written < LIMIT:
        raise Invalid("cache_write_tokens")
    if cached + written > inputs:  # as ``_counts`` checks
        raise Invalid("inconsistent counts")
    return inputs, outputs, cached, written


# (input, output, details) keys of the two usage shapes openai_usage reads.
_CHAT_KEYS = ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
_RESPONSES_KEYS = ("input_tokens", "output_tokens", "input_tokens_details")


def anthropic_usage(usage: Any) -> Counts:
    """Anthropic's ``input_tokens`` excludes cache reads and writes: add them back."""
    if type(usage) is not dict:
        raise Invalid("usage")
    fresh = _count(usage, "input_tokens", required=True)
    read = _count(usage, "cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens")
    outputs = _count(usage, "output_tokens", required=True)
    return _counts(fresh + read + written, outputs, read, written)


def gemini_usage(meta: Any) -> Counts:
    """``promptTokenCount`` includes cached content; tool-use prompts and thoughts are
    billed on top of the prompt and candidates (as genai-prices counts them)."""
    if type(meta) is not dict:
        raise Invalid("usageMetadata")
    # Every field is optional: an early stream chunk has only the prompt count.
    inputs = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    outputs = _count(meta, "candidatesTokenCount") + _count(meta, "thoughtsTokenCount")
    cached = _count(meta, "cachedContentTokenCount")
    return _counts(inputs, outputs, cached, 0)


Found = tuple[str | None, Counts]  # the model the answer names, and its counts


def read_json(kind: str, body: Any) -> Found | None:
    """A whole JSON answer: None when it carries no usage, ``Invalid`` when it is bad."""
    if kind == "gemini":
        return _gemini_json(body)
    if type(body) is not dict or body.get("usage") is None:
        return None
    model = model_name(body.get("model"))
    if kind == "openai":
        return model, openai_usage(body["usage"], embeddings=body.get("object") == "list")
    if kind == "anthropic":
        return model, anthropic_usage(body["usage"])
    return None


def _gemini_json(body: Any) -> Found | None:
    # streamGenerateContent without alt=sse answers with a JSON array of the
    # chunks the SSE form would send: the last usageMetadata wins there too.
    chunks = body if type(body) is list else [body]
    for chunk in reversed(chunks):
        if type(chunk) is dict and chunk.get("usageMetadata") is not None:
            return model_name(chunk.get("modelVersion")), gemini_usage(chunk["usageMetadata"])
    return None


def gemini_array_prefix(data: bytes | bytearray) -> list[Any]:
    """The complete elements at the start of a JSON array cut off mid-way."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return []
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        return []
    items: list[Any] = []
    pos = _skip(text, pos + 1)
    while pos < len(text):
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            break
        items.append(item)
        pos = _skip(text, pos)
        if not text.startswith(",", pos):
            break
        pos = _skip(text, pos + 1)
    return items


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


# --- streams ---------------------------------------------------------------

# `"usage":null` is on every chat chunk when include_usage is on; those chunks
# are skipped without decoding them. Spaced forms come from other servers.
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_RESPONSE_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


class OpenAIStream:
    """Chat and legacy completions chunks carrying ``usage``, and ``/v1/responses``
    streams, whose ``response.completed`` (or ``.incomplete``/``.failed``) event
    carries the response with its usage. The last one seen wins."""

    __slots__ = ("last",)
    knows_end = True  # the usage chunk, or response.completed, comes last

    def __init__(self) -> None:
        self.last: bytes | None = None

    @staticmethod
    def want(raw: bytes) -> bool:
        n = raw.count(b'"usage"')
        if not n or raw.count(b'"usage":null') == n:
            return False
        return len(_NULL_USAGE.findall(raw)) != n

    def take(self, event: str | None, data: bytes) -> None:
        if data != b"[DONE]":
            self.last = data

    @property
    def final(self) -> bool:
        return self.last is not None

    def found(self) -> Found | None:
        if self.last is None:
            return None
        obj = decode(self.last)
        if type(obj) is not dict:
            return None
        if obj.get("type") in _RESPONSE_DONE:
            response = obj.get("response")
            if type(response) is not dict or response.get("usage") is None:
                return None
            return model_name(response.get("model")), openai_usage(response["usage"])
        if obj.get("usage") is None:
            return None
        return model_name(obj.get("model")), openai_usage(obj["usage"])


class AnthropicStream:
    """``message_start`` (model, input and cache counts) and the last ``message_delta``
    (cumulative output tokens; newer API versions repeat the input and cache
    counts there, and those win: server tools can add input on the way)."""

    __slots__ = ("delta", "start")
    knows_end = True  # message_delta comes once, after the content

    def __init__(self) -> None:
        self.start: bytes | None = None
        self.delta: bytes | None = None

    @staticmethod
    def want(raw: bytes) -> bool:
        # ``find``, not ``in`` (cheaper in CPython: see redact.Patterns.found_in).
        return raw.find(b"message_start") >= 0 or raw.find(b"message_delta") >= 0

    def take(self, event: str | None, data: bytes) -> None:
        if event is None:  # the API always names its events; be lenient anyway
            try:
                obj = decode(data)
            except Invalid:
                return
            event = obj.get("type") if type(obj) is dict else None
        if event == "message_start":
            self.start = data
        elif event == "message_delta":
            self.delta = data

    @property
    def final(self) -> bool:
        return self.delta is not None

    def found(self) -> Found | None:
        if self.start is None:
            return None
        start = decode(self.start)
        message = start.get("message") if type(start) is dict else None
        if type(message) is not dict or type(message.get("usage")) is not dict:
            raise Invalid("message_start")
        usage = dict(message["usage"])
        if self.delta is not None:
            delta = decode(self.delta)
            update = delta.get("usage") if type(delta) is dict else None
            if type(update) is not dict:
                raise Invalid("message_delta")
            usage.update({k: v for k, v in update.items() if v is not None})
        return model_name(message.get("model")), anthropic_usage(usage)


class GeminiStream:
    """Every chunk repeats ``usageMetadata`` with the counts so far: the last one wins."""

    __slots__ = ("last",)
    knows_end = False  # no event says "this was the last": only the end of the stream does
    final = False

    def __init__(self) -> None:
        self.last: bytes | None = None

    @staticmethod
    def want(raw: bytes) -> bool:
        return raw.find(b'"usageMetadata"') >= 0  # not ``in``: see AnthropicStream.want

    def take(self, event: str | None, data: bytes) -> None:
        self.last = data

    def found(self) -> Found | None:
        return None if self.last is None else _gemini_json(decode(self.last))


StreamReader = OpenAIStream | AnthropicStream | GeminiStream
STREAMS: dict[str, type[StreamReader]] = {
    "openai": OpenAIStream,
    "anthropic": AnthropicStream,
    "gemini": GeminiStream,
}
