"""A whole JSON answer read from its bytes (``read_answer``) gives exactly what
decoding it all and reading that (``read_json(decode(...))``) gives.

``read_answer`` has msgspec build only the members metering reads and skip
the rest, checked as JSON but never made into objects. These tests hold it
to the full decode's outcome on every fixture, on hand-made edge cases and
on random damage to real answers: the same reading, None, or ``Invalid``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proxy.metering.support import manifest, read
from vaultd.proxy.metering.readers import Invalid, decode, read_answer, read_json

KINDS = ("openai", "anthropic", "gemini")
JSON_FIXTURES = [f for f in manifest() if not f.sse]
CHAT = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "héllo \u2603"}}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 8,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    },
    ensure_ascii=False,
).encode()


def outcome(reader: Any, kind: str, body: bytes) -> object:
    try:
        return reader(kind, body)
    except Invalid:
        return "invalid"


def full(kind: str, body: bytes) -> object:
    return read_json(kind, decode(body))


def same(kind: str, body: bytes) -> object:
    expected = outcome(full, kind, body)
    assert outcome(read_answer, kind, body) == expected, body[:200]
    return expected


@pytest.mark.parametrize("fixture", JSON_FIXTURES, ids=[f.file for f in JSON_FIXTURES])
def test_every_json_fixture_reads_the_same(fixture: Any) -> None:
    same(fixture.kind, read(fixture.file))


def test_the_fixtures_are_not_all_unread() -> None:
    """The control: most JSON fixtures carry a reading (errors and cut-off ones do not)."""
    read_ones = [
        f for f in JSON_FIXTURES if outcome(read_answer, f.kind, read(f.file)) != "invalid"
    ]
    assert sum(outcome(read_answer, f.kind, read(f.file)) is not None for f in read_ones) >= 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "body",
    [
        CHAT,
        CHAT.replace("héllo".encode(), b"h\xffllo"),  # bad UTF-8 in a member not read
        CHAT.replace(b'"id"', b'"\xc3\x28"'),  # ... and in a key
        CHAT.replace(b'"gpt-4o-2024-08-06"', b'"gpt\xff"'),  # ... and in the model
        CHAT.replace(b"h\xc3\xa9llo", b"h\x01llo"),  # a control character in a string
        CHAT.replace(b"h\xc3\xa9llo", b"\\ud800"),  # a lone surrogate
        CHAT + b" x",  # something after the value
        CHAT[:-1],  # cut off
        CHAT.replace(b'"usage"', b'"usage":null,"usage"'),  # the last of twin members wins
        CHAT.replace(b'"usage":{', b'"usage":1,"x":{'),  # usage of the wrong type
        CHAT.replace(b'"model":"gpt-4o-2024-08-06"', b'"model":7'),  # a model that is no string
        CHAT.replace(b'"object":"chat.completion"', b'"object":"list"'),  # embeddings
        b"[" + CHAT + b"]",
        b'"usage"',
        b"null",
        b"",
        b"{" * 5000 + b"}" * 5000,
        b'{"choices":' + b"[" * 5000 + b"]" * 5000 + b',"usage":{"prompt_tokens":1}}',
        b'{"usage":{"prompt_tokens":1e3,"completion_tokens":1}}',
        b'{"usage":{"prompt_tokens":99999999999999999999999,"completion_tokens":1}}',
        b'{"usageMetadata":{"promptTokenCount":3},"modelVersion":"gemini-2.0-flash"}',
        *(
            b'{"model":"m","usage":' + usage + b"}"
            for usage in (
                b'{"prompt_tokens":true,"completion_tokens":1}',
                b'{"prompt_tokens":1.0,"completion_tokens":1}',
                b'{"prompt_tokens":-1,"completion_tokens":1}',
                b'{"prompt_tokens":9007199254740992,"completion_tokens":1}',
                b'{"prompt_tokens":9007199254740991,"completion_tokens":0}',
                b'{"prompt_tokens":null,"input_tokens":5,"output_tokens":1}',
                b'{"input_tokens":5,"output_tokens":1,"input_tokens_details":{"cached_tokens":2}}',
                b'{"prompt_tokens":5,"total_tokens":5}',  # embeddings: object "list" only
                b'{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":[]}',
                b'{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null}',
                b'{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":'
                b'{"cached_tokens":3,"cache_write_tokens":2}}',
                b'{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":'
                b'{"cached_tokens":3,"cache_write_tokens":3}}',
                b'{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":'
                b'{"cached_tokens":"3"}}',
                b'{"prompt_tokens":5,"prompt_tokens":6,"completion_tokens":1}',
                b'{"prompt_tokens":5,"completion_tokens":1,"input_tokens_details":[]}',
                b'[{"prompt_tokens":5}]',
                b'{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":1}',
            )
        ),
    ],
)
def test_edge_cases_read_the_same(kind: str, body: bytes) -> None:
    same(kind, body)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    at=st.integers(min_value=0, max_value=len(CHAT) - 1),
    byte=st.integers(min_value=0, max_value=255),
    cut=st.booleans(),
)
def test_damaged_answers_read_the_same(kind: str, at: int, byte: int, cut: bool) -> None:
    damaged = CHAT[:at] if cut else CHAT[:at] + bytes([byte]) + CHAT[at + 1 :]
    same(kind, damaged)


COUNTS: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-2, max_value=2**53 + 1),
    st.sampled_from([None, True, 1.0, "1", [], {}]),
)
FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
]
DETAILS = st.one_of(
    st.none(),
    st.just([]),
    st.dictionaries(st.sampled_from(["cached_tokens", "cache_write_tokens"]), COUNTS),
)


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    usage=st.dictionaries(st.sampled_from(FIELDS), COUNTS),
    details=st.dictionaries(
        st.sampled_from(["prompt_tokens_details", "input_tokens_details"]), DETAILS
    ),
    what=st.sampled_from(["chat.completion", "list", None]),
)
def test_any_usage_reads_the_same(
    kind: str, usage: dict[str, Any], details: dict[str, Any], what: str | None
) -> None:
    """Counts of every type, in and out of range, either shape, details or none."""
    body = {"model": "gpt-4o", "object": what, "usage": {**usage, **details}}
    same(kind, json.dumps(body).encode())


MODELS: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=210),
    st.text(min_size=195, max_size=205),
    st.sampled_from(
        ["", "a" * 200, "a" * 201, "gpt\n4", "gpt\u00a04", "gpt\u20284", None, 7, True, [], {}]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    model=MODELS,
    cached=st.sampled_from([None, 0, 3, 6]),
    ascii_only=st.booleans(),
)
def test_any_model_reads_the_same(
    kind: str, model: Any, cached: int | None, ascii_only: bool
) -> None:
    """The model, any JSON value (empty, too long, unprintable, no string), beside a
    usage every reader takes: recorded, or not, as the general readers decide."""
    usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 1}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    body = {"model": model, "object": "chat.completion", "usage": usage}
    same(kind, json.dumps(body, ensure_ascii=ascii_only).encode())


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.8e308", b"1e999999999999999999999"])
def test_a_number_past_a_double_where_metering_does_not_look_is_metered(number: bytes) -> None:
    """The one difference from the whole decode (readers.read_answer says so): msgspec
    does not range-check the numbers it skips. The usage is still read and checked."""
    skipped = CHAT.replace(b'"index": 0', b'"index": ' + number)
    assert skipped != CHAT
    with pytest.raises(Invalid):
        decode(skipped)
    assert read_answer("openai", skipped) == ("gpt-4o-2024-08-06", (12, 8, 4, 0))
    in_usage = CHAT.replace(b'"prompt_tokens": 12', b'"prompt_tokens": ' + number)
    assert outcome(read_answer, "openai", in_usage) == "invalid"
