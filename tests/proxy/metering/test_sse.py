"""Event-stream framing by the WHATWG rules, wherever the chunks are cut."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proxy.metering.support import pieces
from vaultd.proxy.metering.sse import BOM, SSEEvent, SSESplitter, parse_event


def split_all(chunks: list[bytes], max_event: int = 1 << 20) -> tuple[list[SSEEvent], bytes]:
    splitter = SSESplitter(max_event)
    events = [e for chunk in chunks for e in splitter.events(chunk)]
    done, rest = splitter.flush()
    return events + [splitter.parse(raw) for raw in done], rest


def dispatched(events: list[SSEEvent]) -> list[tuple[str | None, bytes]]:
    return [(e.event, e.data) for e in events if e.data is not None]


def reference(stream: bytes) -> list[tuple[str | None, bytes]]:
    """The WHATWG algorithm, line by line, for comparison."""
    if stream.startswith(BOM):
        stream = stream[3:]
    lines = re.split(rb"\r\n|\r|\n", stream)
    lines.pop()  # the last piece has no line end: an unfinished line is never processed
    out: list[tuple[str | None, bytes]] = []
    name: str | None = None
    data: list[bytes] | None = None
    for line in lines:
        if not line:
            if data is not None:
                out.append((name, b"\n".join(data)))
            name, data = None, None
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data":
            data = [*(data or []), value]
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return out


def test_fields() -> None:
    stream = (
        b": a comment\n"
        b"event: message_start\n"
        b"id: 7\n"
        b"retry: 100\n"
        b'data: {"a":\n'
        b"data:1}\n"
        b"\n"
        b"data\n"  # a field name alone: data with an empty value
        b"\n"
        b"data:  two spaces keep one\n"
        b"\n"
        b": only a comment\n"
        b"\n"
    )
    events, rest = split_all([stream])
    assert rest == b""
    assert dispatched(events) == [
        ("message_start", b'{"a":\n1}'),
        (None, b""),
        (None, b" two spaces keep one"),
    ]
    assert b"".join(e.raw for e in events) == stream


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_end(end: bytes) -> None:
    stream = end.join([b"event: e", b"data: 1", b"", b"data: 2", b"data: 3", b"", b""])
    for cut in range(len(stream) + 1):
        events, rest = split_all([stream[:cut], stream[cut:]])
        assert dispatched(events) == [("e", b"1"), (None, b"2\n3")], cut
        assert b"".join(e.raw for e in events) + rest == stream


def test_cr_at_a_chunk_end_then_lf_is_one_line_end() -> None:
    # "data: 1\r" + "\n\r\n": the CR and LF are one line end, not a line and a blank line.
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\r") == []
    assert splitter.feed(b"\ndata: 2\r\n") == []
    assert splitter.feed(b"\r\n") == [b"data: 1\r\ndata: 2\r\n\r\n"]


def test_an_event_ending_in_a_lone_cr_waits_for_the_next_byte() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\r\r") == []  # the second CR may be half of CRLF
    assert splitter.feed(b"\n") == [b"data: 1\r\r\n"]
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\r\r") == []
    assert splitter.feed(b"d") == [b"data: 1\r\r"]
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\r\r") == []
    assert splitter.flush() == ([b"data: 1\r\r"], b"")  # the end of the stream decides


def test_a_bom_is_ignored_only_at_the_very_start() -> None:
    stream = BOM + b"data: 1\n\n" + BOM + b"data: 2\n\n"
    for cut in range(len(stream) + 1):
        events, _ = split_all([stream[:cut], stream[cut:]])
        assert dispatched(events) == [(None, b"1")], cut
    assert parse_event(BOM + b"data: 1\n\n", stream_start=True).data == b"1"
    assert parse_event(BOM + b"data: 1\n\n").data is None


def test_blank_lines_between_events_dispatch_nothing() -> None:
    stream = b"\n\n\r\n\rdata: 1\n\n\n\ndata: 2\n\n"
    events, rest = split_all(pieces(stream, range(0, len(stream), 3)))
    assert dispatched(events) == [(None, b"1"), (None, b"2")]
    assert b"".join(e.raw for e in events) + rest == stream


def test_an_unfinished_event_is_never_dispatched() -> None:
    events, rest = split_all([b"data: 1\n\ndata: 2\n"])
    assert dispatched(events) == [(None, b"1")]
    assert rest == b"data: 2\n"


def test_too_large_an_event_gives_up_and_hands_back_what_it_held() -> None:
    big = b"data: " + b"x" * 100 + b"\n\n"
    stream = b"data: 1\n\n" + big + b"data: 2\n\n"
    for cut in range(len(stream) + 1):
        splitter = SSESplitter(max_event=50)
        raws = splitter.feed(stream[:cut])
        overflow = splitter.take_overflow()
        raws += splitter.feed(stream[cut:])
        overflow += splitter.take_overflow()
        assert splitter.gave_up
        assert raws == [b"data: 1\n\n"], cut
        # What it held, and nothing after: the caller sends the rest itself.
        assert stream.startswith(b"data: 1\n\n" + overflow)
        assert len(splitter._buf) == 0


def test_memory_stays_bounded_however_long_the_event() -> None:
    splitter = SSESplitter(max_event=1000)
    splitter.feed(b"data: ")
    for _ in range(100):
        splitter.feed(b"y" * 100)
        assert len(splitter._buf) <= 1000 or splitter.gave_up
    assert splitter.gave_up
    assert splitter.feed(b"data: 1\n\n") == []


def test_an_event_exactly_at_the_limit_passes() -> None:
    event = b"data: " + b"x" * 42 + b"\n\n"
    assert len(event) == 50
    splitter = SSESplitter(max_event=50)
    assert splitter.feed(event) == [event]
    assert not splitter.gave_up


STREAM_BYTES = st.lists(
    st.sampled_from([b"data: ", b"data:", b"event: e", b": c", b"\r", b"\n", b"\r\n", b"x", BOM]),
    max_size=30,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(STREAM_BYTES, st.lists(st.integers(0, 200), max_size=8))
def test_matches_the_reference_algorithm_under_any_split(stream: bytes, cuts: list[int]) -> None:
    events, rest = split_all(pieces(stream, cuts))
    assert b"".join(e.raw for e in events) + rest == stream
    assert dispatched(events) == reference(stream)


@settings(max_examples=200, deadline=None)
@given(STREAM_BYTES)
def test_whole_events_means_splitting_would_hold_nothing(chunk: bytes) -> None:
    # The meter skips such chunks unsplit when none of their events matters.
    splitter = SSESplitter()
    if splitter.whole_events(chunk):
        splitter.feed(chunk)
        assert splitter.flush() == ([], b"")
