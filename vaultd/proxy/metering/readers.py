"""What an answer says about its usage, per provider shape, in one convention.

The counts (``Reading``) are the same for every provider; ``meter`` documents
the convention. Each reader takes decoded JSON; none trusts it: a count
that is not an int (bools are not), is negative, or is 2**53 or more makes the
whole reading invalid (``Invalid``), because a half-read answer would bill the
wrong amount without anyone noticing.

A whole JSON answer is read from its bytes (``read_answer``); the stream
readers (``streams``) read the events that carry usage with the same
functions.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, NamedTuple

import msgspec

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

    msgspec, not the standard library's json: it decodes in about a third
    of the time. It refuses what the readers need refused: a NaN, a lone
    surrogate, a control character in a string, anything after the value,
    and nesting past Python's recursion limit (some 950 levels where the
    proxy calls it, less than orjson's fixed 1024: such an answer is
    unmetered, and under a budget charged the estimate). An integer of any
    length is read whole (orjson refused one past a double's range); no
    count takes one past 2**53.
    """
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        # Bad UTF-8 is a DecodeError in msgspec 0.23, a UnicodeDecodeError in 0.18.
        raise Invalid from e


_DECODER = msgspec.json.Decoder()


class _Answer(msgspec.Struct):
    """The members of an OpenAI or Anthropic JSON answer that metering reads.

    Decoded into this, the rest of the answer (its choices, their text, the
    tool calls: nearly all of it) is checked as JSON but never built into
    Python objects, which was most of what reading a chat completion cost
    the proxy. Anything is taken as each member's value, as ``json`` would
    give it: the readers check them.
    """

    model: Any = None
    object: Any = None
    usage: Any = None


# A count as every reader takes one: an int (not a bool, not a float) from 0 to 2**53 - 1.
_Count = Annotated[int, msgspec.Meta(ge=0, lt=LIMIT)]


class _Cache(msgspec.Struct):
    cached_tokens: _Count | None = None
    cache_write_tokens: _Count | None = None


class _ChatUsage(msgspec.Struct):
    """The usual OpenAI usage (chat and legacy completions), checked by msgspec in C.

    Only the chat shape as ``openai_usage`` reads it, with every count that
    it requires: any other usage (``/v1/responses``' ``input_tokens``, an
    embeddings answer without ``completion_tokens``, a count of the wrong
    type) fails this and is read by ``openai_usage`` from the whole decode.
    """

    prompt_tokens: _Count
    completion_tokens: _Count
    prompt_tokens_details: _Cache | None = None


class _OpenAIAnswer(msgspec.Struct):
    model: Any = None
    object: Any = None
    usage: _ChatUsage | None = None


# By provider: what a whole JSON answer is decoded into (Gemini's may be an array).
_ANSWER_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "openai": msgspec.json.Decoder(_OpenAIAnswer),
    "anthropic": msgspec.json.Decoder(_Answer),
}


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


def openai_usage(usage: Any, embeddings: bool = False) -> Counts:
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
    inputs = usage.get("prompt_tokens")
    # The chat shape unless only input_tokens is there (a null prompt_tokens
    # beside it is still the chat shape's, and invalid).
    if inputs is not None or "prompt_tokens" in usage or "input_tokens" not in usage:
        in_key, out_key, details_key = _CHAT_KEYS
        outputs = usage.get("completion_tokens")
        if outputs is None and embeddings:
            outputs = 0
    else:
        in_key, out_key, details_key = _RESPONSES_KEYS
        inputs = usage["input_tokens"]
        outputs = usage.get("output_tokens")
    if type(inputs) is not int or inputs < 0 or inputs >= LIMIT:
        raise Invalid(in_key)
    if type(outputs) is not int or outputs < 0 or outputs >= LIMIT:
        raise Invalid(out_key)
    details = usage.get(details_key)
    if details is None:
        return inputs, outputs, 0, 0
    if type(details) is not dict:
        raise Invalid(details_key)
    cached = details.get("cached_tokens")
    if cached is None:
        cached = 0
    elif type(cached) is not int or cached < 0 or cached >= LIMIT:
        raise Invalid("cached_tokens")
    written = details.get("cache_write_tokens")
    if written is None:
        written = 0
    elif type(written) is not int or written < 0 or written >= LIMIT:
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


def read_answer(kind: str, data: bytes | bytearray) -> Found | None:
    """A whole JSON answer's bytes: None when it carries no usage, ``Invalid`` when it
    is bad (not JSON, or usage that cannot be trusted).

    The outcome is ``read_json(kind, decode(data))``'s but for one thing that
    msgspec does not check in the members it skips: a number past a double's
    range (``1e400``). Such an answer is metered where the whole decode would
    refuse it; its usage is read and checked all the same.
    """
    decoder = _ANSWER_DECODERS.get(kind)
    if decoder is None:  # Gemini: an object, or an array of the stream's chunks
        return read_json(kind, decode(data))
    try:
        answer = decoder.decode(data)
    except msgspec.ValidationError:
        # Not an object, or not the usual usage (msgspec stops at its first
        # mismatch, before it has checked the rest): the whole decode says
        # whether it is JSON at all, and the general readers read it.
        return read_json(kind, decode(data))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise Invalid from e
    if not data.isascii():
        # What msgspec skips it checks as JSON, escapes and control characters
        # included, but not as UTF-8: bytes that are not are checked here, so
        # that the answer is as Invalid as ``decode`` would find it. (An ASCII
        # body, which is what encoders that escape non-ASCII send, needs none.)
        try:
            str(data, "utf-8")
        except UnicodeDecodeError as e:
            raise Invalid from e
    usage = answer.usage
    if type(usage) is not _ChatUsage:
        return _usage_of(kind, answer.model, answer.object, usage)
    # The usual OpenAI answer, read in this frame: its counts checked by
    # msgspec, the model as ``model_name`` takes it. Each call more here was a
    # frame run cold for every metered answer (tests/proxy/metering/
    # test_answers.py holds this to the general readers).
    model = answer.model
    if type(model) is not str or not 0 < len(model) <= MODEL_MAX or not model.isprintable():
        model = None
    details = usage.prompt_tokens_details
    if details is None:
        return model, (usage.prompt_tokens, usage.completion_tokens, 0, 0)
    return model, _counts(
        usage.prompt_tokens,
        usage.completion_tokens,
        details.cached_tokens or 0,
        details.cache_write_tokens or 0,
    )


def read_json(kind: str, body: Any) -> Found | None:
    """``read_answer`` for a body decoded already (a Gemini array's complete part)."""
    if kind == "gemini":
        return gemini_json(body)
    if type(body) is not dict:
        return None
    return _usage_of(kind, body.get("model"), body.get("object"), body.get("usage"))


def _usage_of(kind: str, model: Any, what: Any, usage: Any) -> Found | None:
    """An OpenAI or Anthropic answer's model and counts, from its top-level members."""
    if usage is None:
        return None
    model = model_name(model)
    if kind == "openai":
        return model, openai_usage(usage, what == "list")  # "list": an embeddings answer
    if kind == "anthropic":
        return model, anthropic_usage(usage)
    return None


def gemini_json(body: Any) -> Found | None:
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
