"""The meter the proxy drives for each answer: it reads model and token usage,
and never holds more of a body than it must.

One convention for every provider (``Reading``):

* ``input_tokens``: every input token the provider billed, cache reads and
  cache writes included. OpenAI's ``prompt_tokens``/``input_tokens`` already
  include cached tokens; Anthropic's ``input_tokens`` does not, so its
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are added;
  Gemini's ``promptTokenCount`` includes cached content, and
  ``toolUsePromptTokenCount`` is added.
* ``output_tokens``: every output token billed, reasoning included. OpenAI's
  counts include reasoning already; Gemini's ``thoughtsTokenCount`` is added
  to ``candidatesTokenCount``.
* ``cached_input_tokens``: input tokens read from a cache (OpenAI
  ``*_tokens_details.cached_tokens``, Anthropic ``cache_read_input_tokens``,
  Gemini ``cachedContentTokenCount``): a part of ``input_tokens``.
* ``cache_write_tokens``: input tokens written to a cache (Anthropic
  ``cache_creation_input_tokens``; OpenAI's ``*_tokens_details.cache_write_tokens``
  where its answers carry it; 0 elsewhere): also a part of ``input_tokens``.

This is the convention of genai-prices' usage extractors too, so its prices
apply directly. Every count is an int from 0 to 2**53 - 1, and cache reads
plus writes never exceed the input. ``model`` is the answer's own (OpenAI
``model``, ``/v1/responses`` ``response.model``, Anthropic ``message.model``,
Gemini ``modelVersion``), else the proxy's hint; 1 to 200 printable
characters, or None. ``complete`` is False when the stream was cut off, grew
an event too large to read, or ended before the event that closes its usage
(Anthropic's ``message_delta``): the counts are then those seen so far.

A result of None means unmetered: no usage in the answer, or usage that could
not be trusted (a count of the wrong type, negative, too large, missing where
required; a body that is not JSON or too large to parse). An error answer
(status 400 or more) without usage is a zero reading: providers do not bill
for those.

When the proxy added ``stream_options.include_usage`` to an OpenAI streamed
request itself (``strip_usage_chunk``), the meter also takes out what that
added, so the client gets the stream it asked for: the usage-only chunk, and
the ``"usage":null`` member on every other chunk (removed as text, so every
other byte stays; checked by decoding, and left alone if the check fails).
"""

from __future__ import annotations

from typing import Any

from vaultd.proxy.metering.readers import (
    Counts,
    Found,
    Invalid,
    Reading,
    decode,
    gemini_array_prefix,
    model_name,
    read_answer,
    read_json,
)
from vaultd.proxy.metering.sse import SSEEvent, SSESplitter, parse_event
from vaultd.proxy.metering.streams import NULL_USAGE, STREAMS, StreamReader

_SSE, _JSON, _OTHER = 0, 1, 2
# A JSON body larger than this is not parsed: unmetered (a Meter's default).
MAX_JSON = 4 << 20
_new_tuple = tuple.__new__
_ZERO: Counts = (0, 0, 0, 0)
_SPACE = b" \t\r\n"


def _body_type(content_type: str | None) -> int:
    if not content_type:
        return _OTHER
    known = _BODY_TYPES.get(content_type)
    if known is not None:
        return known
    media = content_type.partition(";")[0].strip().lower()
    if media == "text/event-stream":
        found = _SSE
    elif media == "application/json" or (
        media.startswith("application/") and media[-5:] == "+json"
    ):
        found = _JSON
    else:
        found = _OTHER
    # Upstreams answer with a handful of Content-Types; a hostile one could
    # send a new one each time, so the memo stops growing at a bound.
    if len(_BODY_TYPES) < _BODY_TYPES_MAX and len(content_type) <= 200:
        _BODY_TYPES[content_type] = found
    return found


def is_json_answer(kind: str, content_type: str | None) -> bool:
    """Whether an answer of a ``kind`` of usage is JSON by its Content-Type: what
    ``read_json_answer`` reads (anything else goes through a ``Meter``)."""
    if not content_type or kind not in STREAMS:
        return False
    known = _BODY_TYPES.get(content_type)  # the memo first: the usual type costs no call
    return (_body_type(content_type) if known is None else known) == _JSON


# Content-Type -> body type, as ``_body_type`` found it (one per answer otherwise).
_BODY_TYPES: dict[str, int] = {}
_BODY_TYPES_MAX = 64


class _Stream:
    """An event stream's state: its framing and its provider's reader."""

    __slots__ = ("failed", "reader", "splitter", "strip")

    def __init__(self, reader: StreamReader, max_event: int, strip: bool) -> None:
        self.reader = reader
        self.splitter = SSESplitter(max_event)
        self.strip = strip
        self.failed = False

    def observe(self, raws: list[bytes]) -> None:
        reader = self.reader
        try:
            for raw in raws:
                if reader.want(raw):  # a substring test: most events stop here
                    _, event, data = self.splitter.parse(raw)
                    if data is not None:
                        reader.take(event, data)
        except Exception:  # never fail an answer over metering: stop reading it
            self.failed = True
            self.splitter.gave_up = True

    def edit(self, raws: list[bytes]) -> bytes:
        return b"".join([self._edit(raw) for raw in raws])

    def _edit(self, raw: bytes) -> bytes:
        try:
            first = self.splitter.is_first(raw)
            event = parse_event(raw, stream_start=first)
            out, usage = _strip(event, first)
        except Exception:  # never lose an event over a bug: pass it as it came
            return raw
        if usage is not None:
            self.reader.take(event.event, usage)
        elif event.data is not None and self.reader.want(raw):
            self.reader.take(event.event, event.data)
        return out


class Meter:
    """Reads one answer's usage while it passes (``feed``/``flush``, or ``whole``)."""

    __slots__ = ("_body", "_hint", "_json", "_kind", "_status", "_stream", "_type", "max_json")

    def __init__(
        self,
        kind: str,
        status: int,
        content_type: str | None,
        strip_usage_chunk: bool = False,
        model_hint: str | None = None,
        *,
        max_event: int = 1 << 20,
        max_json: int = MAX_JSON,
    ) -> None:
        self._kind = kind
        self._status = status
        self._hint = model_hint  # checked (model_name) only where it is used
        self.max_json = max_json
        reader_type = STREAMS.get(kind)
        body_type = _OTHER
        if reader_type is not None and content_type:
            # The memo first: the usual Content-Type costs no call.
            known = _BODY_TYPES.get(content_type)
            body_type = _body_type(content_type) if known is None else known
        self._type = body_type
        self._stream: _Stream | None = None
        if body_type == _SSE and reader_type is not None:
            # Only an OpenAI stream can carry what vaultd's own include_usage added.
            strip = bool(strip_usage_chunk) and kind == "openai"
            self._stream = _Stream(reader_type(), max_event, strip)
        self._json: bytearray | None = bytearray() if body_type == _JSON else None
        self._body: bytes | None = None  # a whole JSON body, kept without a copy

    # -- the body, as it passes ----------------------------------------------

    def whole(self, body: bytes) -> bytes:
        """The complete body at once: what to send the client."""
        if self._type == _JSON:
            if len(body) <= self.max_json:
                self._body = body
            self._json = None
            return body
        sent = self.feed(body) + self.flush()
        return sent if self._stream is not None and self._stream.strip else body

    def feed(self, chunk: bytes) -> bytes:
        """One piece of a streamed body: the bytes to send now."""
        stream = self._stream
        if stream is None:
            buf = self._json
            if buf is not None:
                if len(buf) + len(chunk) <= self.max_json:
                    buf += chunk
                else:  # too large to parse: unmetered, and the copy is freed
                    self._json = None
            return chunk
        splitter = stream.splitter
        if splitter.gave_up:
            return chunk
        if not stream.strip and splitter.whole_events(chunk) and not stream.reader.want(chunk):
            # The usual chunk: whole events, none with usage (the test holds for the
            # chunk iff for each event in it), so none is split out or copied.
            splitter.skip(chunk)
            return chunk
        raws = splitter.feed(chunk)
        if stream.strip:
            # After giving up, what it held goes out as it came, and so does the rest.
            return stream.edit(raws) + splitter.take_overflow()
        if raws:
            stream.observe(raws)
        return chunk

    def flush(self) -> bytes:
        """The end of the stream: whatever is still held."""
        stream = self._stream
        if stream is None or stream.splitter.gave_up:
            return b""
        raws, rest = stream.splitter.flush()
        if stream.strip:
            return stream.edit(raws) + rest
        stream.observe(raws)
        return b""

    # -- the reading ---------------------------------------------------------

    def result(self, complete: bool) -> Reading | None:
        """The usage read, or None for unmetered. (``complete``: whether the answer
        was passed on whole; positional or keyword.)"""
        if self._type == _JSON:
            body = self._body if self._body is not None else self._json
            return read_json_answer(self._kind, self._status, body, complete, self._hint)
        try:
            found, final = self._found(complete)
        except Exception:  # Invalid usage, or a bug: a reading is never worth failing over
            found, final = None, True
        return _reading(found, self._status, self._hint, complete and final)

    def _found(self, complete: bool) -> tuple[Found | None, bool]:
        """A stream's usage found, and whether it can be whole (False marks it
        incomplete). (``result`` reads a JSON body itself.)"""
        stream = self._stream
        if stream is None or stream.failed:
            return None, True
        # Whole counts need the event that ends the usage (Anthropic's message_delta,
        # say), where there is one; where there is none (Gemini), a stream read to
        # its end. Short of that (an event too large to read, or the stream ended
        # early) the counts are those seen so far.
        reader = stream.reader
        ended = reader.final if reader.knows_end else not stream.splitter.gave_up
        return reader.found(), ended


def read_json_answer(
    kind: str, status: int, body: bytes | bytearray | None, complete: bool, hint: str | None
) -> Reading | None:
    """A JSON answer's reading, from its body (as far as it came, when not ``complete``).

    What ``Meter`` does for a JSON body, without a Meter: the proxy calls it
    for the usual answer, whose body came whole with its head, to read it
    with one call. ``hint``: the model the request named, for an answer that
    names none (as ``Meter`` takes it).
    """
    found: Found | None
    try:
        try:
            found = read_answer(kind, body) if body else None
        except Invalid:
            found = _gemini_prefix(kind, body, complete) if body else None
    except Exception:  # Invalid usage, or a bug: a reading is never worth failing over
        found = None
    if found is not None and found[0] is not None:
        # The usual answer, which names its model: made here, a call less.
        model, (inputs, outputs, cached, written) = found
        return _new_tuple(Reading, (model, inputs, outputs, cached, written, complete))
    return _reading(found, status, hint, complete)


def _gemini_prefix(kind: str, body: bytes | bytearray, complete: bool) -> Found | None:
    """After ``Invalid``: a Gemini JSON-array stream cut off mid-way still counts
    its complete chunks; anything else is unmetered (``Invalid`` again)."""
    if complete or kind != "gemini":
        raise Invalid("not JSON")
    return read_json(kind, gemini_array_prefix(body))


def _reading(found: Found | None, status: int, hint: str | None, complete: bool) -> Reading | None:
    """``found`` as a Reading; an error answer (400 or more) without usage reads as zero."""
    if found is None:
        if status < 400:
            return None
        found = (None, _ZERO)
    model, (inputs, outputs, cached, written) = found
    if model is None and hint is not None:
        model = model_name(hint)
    # tuple.__new__, as NamedTuple._make does: Reading's own __new__ is a
    # Python function, a call more for every metered answer.
    return _new_tuple(Reading, (model, inputs, outputs, cached, written, complete))


# -- what include_usage added, taken out again -------------------------------


def _strip(event: SSEEvent, first: bool) -> tuple[bytes, bytes | None]:
    """What to send instead of ``event``, and the usage chunk's data when it is one."""
    raw, _, data = event
    if data is None or data.find(b'"usage"') < 0:  # not ``in``: see streams.AnthropicStream.want
        return raw, None
    try:
        obj = decode(data)
    except Invalid:
        return raw, None
    if type(obj) is not dict or "usage" not in obj:
        return raw, None
    usage = obj["usage"]
    if usage is None:
        return _without_null_usage(event, obj, first), None
    if type(usage) is dict and obj.get("choices") == []:
        return b"", data  # the usage-only chunk: the client never asked for it
    return raw, None


def _without_null_usage(event: SSEEvent, obj: dict[str, Any], first: bool) -> bytes:
    """``event`` with its ``"usage":null`` member cut out of the text, or as it was
    when the cut does not give the same object less that member."""
    raw = event.raw
    start, end = _null_usage_member(raw)
    if start < 0:
        return raw
    cut = raw[:start] + raw[end:]
    edited = parse_event(cut, stream_start=first)
    if edited.event != event.event or edited.data is None:
        return raw
    try:
        again = decode(edited.data)
    except Invalid:
        return raw
    del obj["usage"]
    return cut if again == obj else raw


def _null_usage_member(raw: bytes) -> tuple[int, int]:
    """Where the last ``"usage":null`` member is, with the comma that goes with it."""
    # OpenAI's own compact form, after "choices": found without a regex.
    at = raw.rfind(b',"usage":null')
    if at >= 0:
        return at, at + 13
    match = None
    for match in NULL_USAGE.finditer(raw):  # noqa: B007 (the last one is wanted)
        pass
    if match is None:
        return -1, -1
    start, end = match.span()
    before = start
    while before > 0 and raw[before - 1] in _SPACE:
        before -= 1
    if before > 0 and raw[before - 1] == 0x2C:  # a comma before: take it with the member
        return before - 1, end
    after = end
    while after < len(raw) and raw[after] in _SPACE:
        after += 1
    if after < len(raw) and raw[after] == 0x2C:  # the first member: take the comma after
        return start, after + 1
    return start, end  # the only member
