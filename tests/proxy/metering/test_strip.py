"""Strip mode takes out exactly what include_usage added, and nothing else; and no
input whatever makes the meter raise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proxy.metering.support import manifest, pieces, run
from vaultd.proxy.metering import Meter, Reading

USAGE = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
READ = Reading(None, 3, 2, 0, 0, True)


def strip(body: bytes, **options: Any) -> tuple[bytes, Reading | None]:
    meter = Meter(
        "openai", status=200, content_type="text/event-stream", strip_usage_chunk=True, **options
    )
    return meter.whole(body), meter.result(complete=True)


def ev(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


@pytest.mark.parametrize(
    ("chunk", "sent"),
    [
        (b'{"id":1,"choices":[],"usage":null}', b'{"id":1,"choices":[]}'),
        (b'{"usage":null,"id":1}', b'{"id":1}'),
        (b'{"usage":null}', b"{}"),
        (b'{"id": 1, "usage": null}', b'{"id": 1}'),
        (b'{"usage" : null , "id": 1}', b'{ "id": 1}'),
        (b'{"id":1,"usage":null,"obfuscation":"ab"}', b'{"id":1,"obfuscation":"ab"}'),
    ],
)
def test_the_null_usage_member_is_cut_out_as_text(chunk: bytes, sent: bytes) -> None:
    assert strip(ev(chunk) + ev(USAGE)) == (ev(sent), READ)


@pytest.mark.parametrize(
    "chunk",
    [
        # Duplicate keys: the cut would leave "usage" in, so the check fails.
        b'{"usage":null,"id":1,"usage":null}',
        # Only a nested member: not what include_usage adds.
        b'{"choices":[{"delta":{"usage":null}}],"id":1}',
        # The last match is nested while the top-level one is first: left alone.
        b'{"usage":null,"choices":[{"usage":null}]}',
        # A key that only ends like it, inside an escaped string.
        b'{"x\\"usage":null,"id":1}',
        # usage not null, not an object, or not at the top level of an object.
        b'{"choices":[{"index":0}],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
        b'{"choices":[],"usage":[]}',
        b'["usage",null]',
        b"[DONE]",
        b'{"usage":null',  # not JSON
    ],
)
def test_anything_else_passes_unchanged(chunk: bytes) -> None:
    sent, _ = strip(ev(chunk))
    assert sent == ev(chunk)


def test_a_usage_chunk_with_choices_is_counted_and_kept() -> None:
    chunk = b'{"choices":[{"index":0}],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    assert strip(ev(chunk)) == (ev(chunk), READ)


def test_several_data_lines_and_other_fields_are_kept() -> None:
    event = b'event: chunk\nid: 4\ndata: {"id":1,\ndata: "usage":null}\n\n'
    # The member spans two lines: cutting one line's text cannot remove it whole.
    assert strip(event)[0] == event
    event = b'event: chunk\nid: 4\ndata: {"id":1,"usage":null,\ndata: "x":2}\n\n'
    assert strip(event)[0] == b'event: chunk\nid: 4\ndata: {"id":1,\ndata: "x":2}\n\n'


def test_an_event_too_large_goes_out_as_it_came_and_stripping_stops() -> None:
    small = ev(b'{"id":1,"usage":null}')
    big = ev(b'{"id":2,"usage":null,"pad":"' + b"x" * 200 + b'"}')
    body = small + big + small + ev(USAGE)
    sent, reading = strip(body, max_event=100)
    assert sent == ev(b'{"id":1}') + big + small + ev(USAGE)
    assert reading is None


def test_usage_read_before_an_event_too_large_is_kept() -> None:
    big = ev(b'{"pad":"' + b"x" * 200 + b'"}')
    sent, reading = strip(ev(USAGE) + big, max_event=100)
    assert sent == big
    assert reading == READ


def test_strip_mode_is_only_for_openai_streams() -> None:
    fx = {f.file: f for f in manifest()}
    for name in ("anthropic_stream.sse", "gemini_stream.sse", "openai_chat.json"):
        fixture = fx[name]
        meter = fixture.meter(strip=True)
        assert meter.whole(fixture.body) is fixture.body
        assert meter.result(complete=True) == fixture.expect


# -- never an exception -----------------------------------------------------

PARTS = st.sampled_from(
    [
        b"data: ",
        b"event: message_start\n",
        b"event: message_delta\n",
        b"\n",
        b"\r",
        b"\n\n",
        b'{"usage":null,',
        b'"usage":{"prompt_tokens":1,"completion_tokens":2}',
        b'{"choices":[],"usage":{"prompt_tokens":-1}}',
        b'{"type":"message_start","message":{"usage":{"input_tokens":1,"output_tokens":true}}}',
        b'{"type":"response.completed","response":{"usage":{"input_tokens":"1"}}}',
        b'{"usageMetadata":{"promptTokenCount":1e3}}',
        b'"usageMetadata":[',
        b"[DONE]",
        b"\xff\xfe",
        b"\xef\xbb\xbf",
        b"}",
        b"]",
        b"[",
        b",",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(PARTS, st.binary(max_size=8)), max_size=25).map(b"".join),
    st.lists(st.integers(0, 300), max_size=6),
    st.sampled_from(["openai", "anthropic", "gemini"]),
    st.sampled_from(["text/event-stream", "application/json", "text/plain"]),
    st.booleans(),
    st.integers(200, 599),
    st.sampled_from([16, 64, 1 << 20]),
)
def test_no_input_makes_the_meter_raise(
    body: bytes,
    cuts: list[int],
    kind: str,
    content_type: str,
    strip_on: bool,
    status: int,
    limit: int,
) -> None:
    def make() -> Meter:
        return Meter(
            kind,
            status=status,
            content_type=content_type,
            strip_usage_chunk=strip_on,
            max_event=limit,
            max_json=limit,
        )

    sent, reading = run(make(), pieces(body, cuts))
    whole = make()
    assert whole.whole(body) == sent  # whole or in pieces: the same bytes out
    assert whole.result(complete=True) == reading
    if not (strip_on and kind == "openai" and content_type == "text/event-stream"):
        assert sent == body  # only strip mode ever changes a byte
    for complete in (True, False):
        result = make().result(complete=complete)
        assert result is None or result.input_tokens == 0
    if reading is not None:
        assert all(type(n) is int and 0 <= n < 2**53 for n in reading[1:5])
        assert reading.cached_input_tokens + reading.cache_write_tokens <= reading.input_tokens
