"""The meter's rules beyond the fixtures: content types, status, models, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.proxy.metering.support import manifest, pieces, read, run
from vaultd.proxy.metering import Meter, Reading

SSE = "text/event-stream"
JSON = "application/json"


def chat(usage: Any, **extra: Any) -> bytes:
    return json.dumps(
        {"id": "c", "model": "gpt-4o", "choices": [], "usage": usage, **extra}
    ).encode()


def meter(kind: str = "openai", content_type: str | None = JSON, **options: Any) -> Meter:
    return Meter(kind, status=options.pop("status", 200), content_type=content_type, **options)


def whole(
    body: bytes, kind: str = "openai", content_type: str | None = JSON, **options: Any
) -> Reading | None:
    m = meter(kind, content_type, **options)
    m.whole(body)
    return m.result(complete=True)


def stream(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


OK = chat({"prompt_tokens": 10, "completion_tokens": 5})
READ = Reading("gpt-4o", 10, 5, 0, 0, True)


@pytest.mark.parametrize(
    ("content_type", "metered"),
    [
        ("application/json", True),
        ("Application/JSON ; charset=UTF-8", True),
        ("application/vnd.api+json", True),
        ("text/event-stream", False),  # the body is JSON, not events: nothing found
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_the_content_type_decides_the_parser(content_type: str | None, metered: bool) -> None:
    assert whole(OK, content_type=content_type) == (READ if metered else None)


def test_sse_content_type_with_parameters() -> None:
    body = stream(OK, b"[DONE]")
    assert whole(body, content_type="Text/Event-Stream;charset=utf-8") == READ


def test_an_unknown_kind_is_unmetered() -> None:
    assert whole(OK, kind="none") is None
    assert whole(OK, kind="none", status=500) == Reading(None, 0, 0, 0, 0, True)


def test_an_error_answer_without_usage_counts_zero() -> None:
    error = b'{"error": {"message": "Rate limit reached", "type": "requests"}}'
    assert whole(error, status=429, model_hint="gpt-4o") == Reading("gpt-4o", 0, 0, 0, 0, True)
    assert whole(b"<html>Bad Gateway</html>", content_type="text/html", status=502) == Reading(
        None, 0, 0, 0, 0, True
    )
    assert whole(error, status=200) is None  # a success without usage: unmetered
    assert whole(OK, status=400) == READ  # usage on an error answer is still usage


def test_the_model_from_the_answer_or_else_the_hint() -> None:
    no_model = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    assert whole(no_model, model_hint="gpt-4o-mini") == Reading("gpt-4o-mini", 1, 1, 0, 0, True)
    assert whole(OK, model_hint="other") == READ
    assert whole(no_model) == Reading(None, 1, 1, 0, 0, True)


@pytest.mark.parametrize("model", ["x" * 201, "", "gpt\n4", "gpt\x00", 42, None, ["gpt-4o"]])
def test_a_model_string_that_is_not_one_is_dropped(model: Any) -> None:
    body = json.dumps({"model": model, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    assert whole(body.encode(), model_hint="hint") == Reading("hint", 1, 1, 0, 0, True)
    hinted = whole(body.encode(), model_hint=model if isinstance(model, str) else None)
    assert hinted is not None
    assert hinted.model is None


def test_a_model_of_200_printable_characters_is_kept() -> None:
    body = json.dumps({"model": "é" * 200, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    reading = whole(body.encode())
    assert reading is not None
    assert reading.model == "é" * 200


BAD_OPENAI = [
    {"prompt_tokens": "10", "completion_tokens": 5},
    {"prompt_tokens": 10.0, "completion_tokens": 5},
    {"prompt_tokens": True, "completion_tokens": 5},
    {"prompt_tokens": -1, "completion_tokens": 5},
    {"prompt_tokens": 2**53, "completion_tokens": 5},
    {"prompt_tokens": None, "completion_tokens": 5},
    {"completion_tokens": 5},
    {"prompt_tokens": 10},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": []},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": "1"}},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 11}},
    {"input_tokens": 10, "output_tokens": -5},
    {"input_tokens": 10},
    "10 tokens",
    [10, 5],
]


def test_openai_usage_of_the_wrong_shape_is_unmetered() -> None:
    for usage in BAD_OPENAI:
        check_bad_openai(usage)


def check_bad_openai(usage: Any) -> None:
    assert whole(chat(usage)) is None, usage
    assert whole(stream(chat(usage), b"[DONE]"), content_type=SSE) is None
    m = meter(content_type=SSE, strip_usage_chunk=True)
    body = stream(chat(usage), b"[DONE]")
    # A usage-only chunk (usage an object) is still removed: the client never asked for it.
    assert m.whole(body) == (stream(b"[DONE]") if isinstance(usage, dict) else body)
    assert m.result(complete=True) is None


def test_openai_optional_details_may_be_null_or_absent() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None}
    assert whole(chat(usage)) == READ
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": None}
    assert whole(chat(usage)) == READ


def test_the_largest_exact_count_is_accepted() -> None:
    big = 2**53 - 1
    assert whole(chat({"prompt_tokens": big, "completion_tokens": 0})) == Reading(
        "gpt-4o", big, 0, 0, 0, True
    )
    # Anthropic's sum of three counts must stay exact too.
    body = {
        "model": "m",
        "usage": {"input_tokens": big, "cache_read_input_tokens": 1, "output_tokens": 0},
    }
    assert whole(json.dumps(body).encode(), kind="anthropic") is None


BAD_ANTHROPIC = [
    {"input_tokens": 5},
    {"output_tokens": 5},
    {"input_tokens": 5, "output_tokens": "5"},
    {"input_tokens": 5, "output_tokens": 5, "cache_read_input_tokens": -2},
    {"input_tokens": 5, "output_tokens": 5, "cache_creation_input_tokens": 1.5},
]


def test_anthropic_usage_of_the_wrong_shape_is_unmetered() -> None:
    for usage in BAD_ANTHROPIC:
        body = json.dumps({"model": "claude", "usage": usage}).encode()
        assert whole(body, kind="anthropic") is None, usage
        start = {"type": "message_start", "message": {"model": "claude", "usage": usage}}
        events = b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
        assert whole(events, kind="anthropic", content_type=SSE) is None, usage


def test_anthropic_cache_counts_may_be_null() -> None:
    usage = {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": None}
    body = json.dumps({"model": "claude", "usage": usage}).encode()
    assert whole(body, kind="anthropic") == Reading("claude", 5, 2, 0, 0, True)


BAD_GEMINI = [
    {"promptTokenCount": "7"},
    {"promptTokenCount": 7, "candidatesTokenCount": -1},
    {"promptTokenCount": 7, "thoughtsTokenCount": False},
    {"promptTokenCount": 7, "cachedContentTokenCount": 8},
    "7",
]


def test_gemini_usage_of_the_wrong_shape_is_unmetered() -> None:
    for meta in BAD_GEMINI:
        chunk = json.dumps({"modelVersion": "gemini", "usageMetadata": meta}).encode()
        assert whole(chunk, kind="gemini") is None, meta
        assert whole(b"[" + chunk + b"]", kind="gemini") is None, meta
        assert whole(stream(chunk), kind="gemini", content_type=SSE) is None, meta


def test_anthropic_message_delta_counts_win() -> None:
    # Newer API versions repeat the input counts in message_delta, and server
    # tools can make them larger than message_start said.
    start = {
        "type": "message_start",
        "message": {"model": "claude", "usage": {"input_tokens": 10, "output_tokens": 1}},
    }
    delta = {
        "type": "message_delta",
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 40},
    }
    body = b"".join(
        b"event: " + name + b"\ndata: " + json.dumps(obj).encode() + b"\n\n"
        for name, obj in [(b"message_start", start), (b"message_delta", delta)]
    )
    assert whole(body, kind="anthropic", content_type=SSE) == Reading("claude", 30, 40, 5, 0, True)
    # No event names (a proxy that drops them): the data's type still says which is which.
    unnamed = stream(json.dumps(start).encode(), json.dumps(delta).encode())
    assert whole(unnamed, kind="anthropic", content_type=SSE) == Reading(
        "claude", 30, 40, 5, 0, True
    )


def test_the_last_usage_seen_wins_in_a_stream() -> None:
    first = chat({"prompt_tokens": 1, "completion_tokens": 1})
    body = stream(first, OK, b"[DONE]")
    assert whole(body, content_type=SSE) == READ


def test_malformed_json_events_are_unmetered_never_raised() -> None:
    body = stream(b'{"usage": {"prompt_tokens": 1,', b"[DONE]")
    assert whole(body, content_type=SSE) is None
    m = meter(content_type=SSE, strip_usage_chunk=True)
    assert m.whole(body) == body
    assert m.result(complete=True) is None
    assert whole(b'{"usage": {', content_type=JSON) is None
    assert whole(b"[" * 100_000 + b"]" * 100_000, content_type=JSON) is None  # too deep
    deep = b'{"usage":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert whole(stream(deep), content_type=SSE) is None


def test_invalid_utf8_is_unmetered_and_passed_on_unchanged() -> None:
    bad = OK.replace(b'"c"', b'"\xff\xfe"')
    assert whole(bad) is None
    body = stream(bad, b"[DONE]")
    m = meter(content_type=SSE, strip_usage_chunk=True)
    assert m.whole(body) == body
    assert m.result(complete=True) is None


def test_a_10_mb_event_is_passed_on_and_unmetered() -> None:
    huge = b"data: " + b'{"usage":' + b"x" * (10 << 20) + b"}\n\n"
    body = stream(b'{"choices":[{"delta":{}}],"usage":null}') + huge + stream(OK, b"[DONE]")
    for strip in (False, True):
        m = meter(content_type=SSE, strip_usage_chunk=strip)
        sent = b"".join(m.feed(chunk) for chunk in pieces(body, range(0, len(body), 65536)))
        sent += m.flush()
        expected = body.replace(b',"usage":null', b"") if strip else body
        assert sent == expected
        assert m.result(complete=True) is None  # the usage came after the event too large to read
        assert whole(body, content_type=SSE, strip_usage_chunk=strip) is None


def test_usage_seen_before_an_event_too_large_still_counts() -> None:
    fx = {f.file: f for f in manifest()}
    huge = b"event: ping\ndata: " + b"x" * 5000 + b"\n\n"
    anthropic = fx["anthropic_stream.sse"]
    m = anthropic.meter(max_event=4096)
    m.whole(anthropic.body + huge)
    assert m.result(complete=True) == anthropic.expect  # message_delta had been seen
    gemini = fx["gemini_stream.sse"]
    m = gemini.meter(max_event=4096)
    m.whole(gemini.body + huge)
    # No Gemini event says it was the last: counts from before are only a lower bound.
    assert gemini.expect is not None
    assert m.result(complete=True) == gemini.expect._replace(complete=False)


def test_a_json_body_over_max_json_is_unmetered() -> None:
    assert whole(OK, max_json=len(OK)) == READ
    assert whole(OK, max_json=len(OK) - 1) is None
    m = meter(max_json=len(OK) - 1)
    for chunk in pieces(OK, [10, 20]):
        assert m.feed(chunk) is chunk
    assert m.result(complete=True) is None
    assert whole(OK, max_json=1, status=503) == Reading(None, 0, 0, 0, 0, True)


def test_cr_only_line_ends() -> None:
    fx = {f.file: f for f in manifest()}
    for name in ("anthropic_stream_tool_use.sse", "gemini_stream_tools.sse"):
        fixture = fx[name]
        body = fixture.body.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
        sent, reading = run(fixture.meter(), pieces(body, range(0, len(body), 7)))
        assert sent == body
        assert reading == fixture.expect
    fixture = fx["openai_chat_stream_text.with_usage.sse"]
    body = fixture.body.replace(b"\n", b"\r")
    wanted = read(fixture.strip_to or "").replace(b"\n", b"\r")
    for cut in range(0, len(body) + 1, 13):
        sent, reading = run(fixture.meter(strip=True), [body[:cut], body[cut:]])
        assert sent == wanted
        assert reading == fixture.expect


def test_cut_off_streams_count_what_was_seen() -> None:
    start = {
        "type": "message_start",
        "message": {"model": "claude", "usage": {"input_tokens": 9, "output_tokens": 1}},
    }
    body = b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\nevent: content_bl"
    m = meter("anthropic", SSE)
    m.whole(body)
    assert m.result(complete=False) == Reading("claude", 9, 1, 0, 0, False)
    m = meter("openai", SSE)
    m.whole(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: {"cho')
    assert m.result(complete=False) is None
    m = meter("openai", JSON)
    m.whole(OK[:-5])
    assert m.result(complete=False) is None


def test_an_anthropic_stream_that_ends_without_message_delta_is_incomplete() -> None:
    # An error event mid-stream (overloaded_error) ends it: the output so far is unknown.
    start = {
        "type": "message_start",
        "message": {"model": "claude", "usage": {"input_tokens": 9, "output_tokens": 1}},
    }
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    body = b"".join(
        b"event: " + name + b"\ndata: " + json.dumps(obj).encode() + b"\n\n"
        for name, obj in [(b"message_start", start), (b"error", error)]
    )
    m = meter("anthropic", SSE)
    m.whole(body)
    assert m.result(complete=True) == Reading("claude", 9, 1, 0, 0, False)
