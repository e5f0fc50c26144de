"""Stream readers: the events of an answer's stream that carry its usage, per provider.

Each reader keeps only the data of the few events that carry usage (``want``
is a substring test on the raw event, so the events in between cost
nothing) and decodes them once, when the reading is asked for, with the
readers of the whole-answer shapes (``readers``).
"""

from __future__ import annotations

import re

from vaultd.proxy.metering.readers import (
    Found,
    Invalid,
    anthropic_usage,
    decode,
    gemini_json,
    model_name,
    openai_usage,
)

# "usage": null, however spaced: OpenAI's chunks carry it where there is none yet.
NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
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
        return len(NULL_USAGE.findall(raw)) != n

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
        return None if self.last is None else gemini_json(decode(self.last))


StreamReader = OpenAIStream | AnthropicStream | GeminiStream
STREAMS: dict[str, type[StreamReader]] = {
    "openai": OpenAIStream,
    "anthropic": AnthropicStream,
    "gemini": GeminiStream,
}
