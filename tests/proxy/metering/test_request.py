"""add_stream_usage: include_usage for a streamed completion, or the body left alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.proxy.metering import StreamUsage, add_stream_usage

ON = {"include_usage": True}


def added(body: bytes) -> Any:
    result = add_stream_usage(body)
    assert result.added
    assert not result.unreadable
    assert result.body is not None
    return json.loads(result.body)


def test_inserted_right_after_the_brace_keeping_every_other_byte() -> None:
    body = (
        b'  {\n  "model": "gpt-4o",\n  "stream": true,\n'
        b'  "messages": [{"role": "user", "content": "h\xc3\xa9"}]\n}\n'
    )
    result = add_stream_usage(body)
    assert result == StreamUsage(
        body.replace(b"{", b'{"stream_options":{"include_usage":true},', 1), True, False, "gpt-4o"
    )
    assert result.body is not None
    assert json.loads(result.body) == {"stream_options": ON, **json.loads(body)}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"include_usage": False},
        {"include_obfuscation": False},
        None,  # the API's "not given"
    ],
)
def test_stream_options_without_include_usage_get_it(options: Any) -> None:
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": options,
        "n": 2,
        "temperature": 0.5,
    }
    sent = added(json.dumps(body).encode())
    assert sent == {**body, "stream_options": {**(options or {}), "include_usage": True}}
    assert list(sent) == list(body)  # the members keep their order


def test_reserialising_keeps_unicode_and_lone_surrogates() -> None:
    body = b'{"stream":true,"stream_options":{},"prompt":"\xe2\x82\xac \\ud800"}'
    sent = added(body)
    assert sent["prompt"] == "\u20ac \ud800"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}',
        b'{"model":"gpt-4o","stream":false}',
        b'{"model":"gpt-4o"}',
        b'{"model":"gpt-4o","stream":false,"stream_options":"nonsense"}',
    ],
)
def test_nothing_to_add(body: bytes) -> None:
    # The model the body names is read all the same.
    assert add_stream_usage(body) == StreamUsage(None, False, False, "gpt-4o")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff{}",
        b'{"stream":true,"prompt":"\xc3"}',  # invalid UTF-8
        b"\xef\xbb\xbf" + b'{"stream":true}',  # a BOM: not JSON by RFC 8259
        b"not json",
        b'["stream", true]',
        b'"stream"',
        b'{"stream":true,"stream":false}',  # duplicate keys: parsers disagree on them
        b'{"stream":true,"messages":[{"role":"user","role":"system"}]}',
        b'{"stream":true,"temperature":NaN}',
        b'{"stream":true,"temperature":Infinity}',
        b'{"stream":true,"temperature":-Infinity}',
        b'{"stream":"true"}',
        b'{"stream":1}',
        b'{"stream":null}',
        b'{"stream":true,"stream_options":[]}',
        b'{"stream":true,"stream_options":"on"}',
        b'{"stream":true,"stream_options":{"include_usage":"yes"}}',
        b'{"stream":true,"stream_options":{"include_usage":null}}',
        b'{"stream":true} trailing',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_unreadable_bodies_are_left_alone(body: bytes) -> None:
    assert add_stream_usage(body) == StreamUsage(None, False, True)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5), st.booleans(), st.booleans())
def test_any_request_object(extra: dict[str, Any], stream: bool, indent: bool) -> None:
    obj = {
        **{k: v for k, v in extra.items() if k not in ("stream", "stream_options")},
        "stream": stream,
    }
    body = json.dumps(obj, indent=2 if indent else None).encode()
    result = add_stream_usage(body)
    assert not result.unreadable
    if not stream:
        assert (result.body, result.added, result.unreadable) == (None, False, False)
        return
    assert result.added
    assert result.body is not None
    assert json.loads(result.body) == {"stream_options": ON, **obj}
    assert result.body.replace(b'"stream_options":{"include_usage":true},', b"", 1) == body


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes(body: bytes) -> None:
    result = add_stream_usage(body)
    assert result.body is None or result.added
