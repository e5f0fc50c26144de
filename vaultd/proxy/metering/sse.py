"""Server-sent events framing (the WHATWG event-stream rules), fed arbitrary chunks.

The splitter finds where each event ends and hands back its raw bytes, so a
caller can pass an event on byte for byte, drop it, or edit it; parsing its
fields is a separate step (``parse_event``) that the caller pays for only on
the events it cares about.

The rules that matter for framing:

* a line ends in CRLF, LF or CR; a CR that is the last byte seen so far may
  be the first half of a CRLF, so an event ending there is held until the
  next byte (or the end of the stream) decides;
* an event ends at a blank line; its raw bytes include that blank line, and
  any blank lines that came before it (they dispatch nothing on their own);
* ``data:`` takes one optional space after the colon, several data lines
  are joined by LF; ``event:`` names the event; a line starting with ``:`` is
  a comment; a UTF-8 BOM at the very start of the stream is ignored.

Bounded memory: an event (or the partial event held) larger than
``max_event`` makes the splitter give up. It then hands back what it held
(``overflow``) and takes no more input, so a caller passes the rest through
untouched. The limit applies to complete events too, so where the stream's
chunks happen to be cut never changes the outcome.
"""

from __future__ import annotations

import re
from typing import NamedTuple

BOM = b"\xef\xbb\xbf"
# A line end, then a blank line's end. The first CR may not be the start of a
# CRLF (that is one line end, not two); the second may be, and the search
# prefers CRLF there, so a match ending in a lone CR at the end of the buffer
# is the one ambiguous case.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_CR = 0x0D
_COLON = 0x3A
# A boundary is at most 4 bytes (CRLF CRLF): a failed search leaves at most
# the last 3 bytes as the possible start of one.
_KEEP = 3


class SSEEvent(NamedTuple):
    raw: bytes
    """The event's bytes as received, through its terminating blank line."""
    event: str | None
    """The ``event:`` field, or None when there was none."""
    data: bytes | None
    """The data lines joined by LF; None when the event had no data field
    (a comment or a lone blank line, which the WHATWG rules never dispatch)."""


def parse_event(raw: bytes, *, stream_start: bool = False) -> SSEEvent:
    """The fields of one event's raw bytes (``stream_start``: it opened the stream)."""
    body = raw[3:] if stream_start and raw.startswith(BOM) else raw
    # ``find``, not ``in``: a bytes ``in`` raises and clears a TypeError inside
    # CPython on every test (redact.Patterns.found_in says more).
    if body[:6] == b"data: " and body.find(b"\r") < 0:
        # The usual event, one data line and LF ends: no line splitting needed.
        line = body.rstrip(b"\n")
        if line.find(b"\n") < 0:
            return SSEEvent(raw, None, line[6:])
    name: str | None = None
    data: list[bytes] | None = None
    for line in _LINE_END.split(body):
        if not line or line[0] == _COLON:
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if data is None:
                data = [value]
            else:
                data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return SSEEvent(raw, name, None if data is None else b"\n".join(data))


class SSESplitter:
    """Cuts a byte stream into events' raw bytes; one per response."""

    __slots__ = ("_buf", "_first", "_fresh", "_scan", "gave_up", "max_event", "overflow")

    def __init__(self, max_event: int = 1 << 20) -> None:
        self.max_event = max_event
        self._buf = bytearray()  # the start of the event not yet complete
        self._scan = 0  # where in _buf the next boundary can start
        self._first: bytes | None = None  # the event that began the stream: a BOM counts there
        self._fresh = True  # no byte of the stream has gone by yet
        self.gave_up = False
        self.overflow = b""  # what was held when it gave up

    def feed(self, chunk: bytes) -> list[bytes]:
        """The raw bytes of every event that ``chunk`` completes, in order."""
        if self.gave_up or not chunk:
            return []
        buf = self._buf
        if buf:
            buf += chunk
            return self._split(buf, self._scan, final=False)
        # Nothing held (the usual case between events): search the chunk itself
        # and copy only the partial event left at its end.
        return self._split(chunk, 0, final=False)

    def whole_events(self, chunk: bytes) -> bool:
        """Whether ``chunk`` is whole events that splitting would leave nothing of:
        nothing is held before it, it ends on a boundary, and it is no larger than
        one event may be (so skipping it cannot skip giving up). A caller that a
        substring test on the whole chunk tells no event in it matters may then
        ``skip`` it."""
        if self._buf or self.gave_up or len(chunk) > self.max_event:
            return False
        # The line ends at its end: an even run of LF, or of CRLF (a run of blank
        # lines of odd length would leave one held; a mixed run, let the regex decide).
        tail = len(chunk) - len(chunk.rstrip(b"\r\n"))
        if tail < 2 or tail % 2:
            return False
        ends = chunk[-tail:]
        if ends[0] == _CR:
            return tail % 4 == 0 and ends == b"\r\n" * (tail // 2)
        return ends.count(b"\n") == tail

    def skip(self, chunk: bytes) -> None:
        """Take ``chunk`` (whole events, see ``whole_events``) as fed, unsplit."""
        if chunk:
            self._fresh = False

    def events(self, chunk: bytes) -> list[SSEEvent]:
        """``feed``, with each event's fields parsed."""
        return [self.parse(raw) for raw in self.feed(chunk)]

    def flush(self) -> tuple[list[bytes], bytes]:
        """At the end of the stream: the events still held, and the bytes of an
        unfinished event (never dispatched, as the WHATWG rules say)."""
        if self.gave_up:
            return [], b""
        done = self._split(self._buf, self._scan, final=True)
        # Giving up here moved what was held to the overflow.
        rest = self.take_overflow() or bytes(self._buf)
        self._buf = bytearray()
        self._scan = 0
        return done, rest

    def take_overflow(self) -> bytes:
        """What was held when it gave up (once; then nothing)."""
        overflow, self.overflow = self.overflow, b""
        return overflow

    def parse(self, raw: bytes) -> SSEEvent:
        """The fields of an event handed out here (it knows which one began the stream)."""
        return parse_event(raw, stream_start=raw is self._first)

    def is_first(self, raw: bytes) -> bool:
        """Whether ``raw`` (handed out here) began the stream, where a BOM is ignored."""
        return raw is self._first

    def _split(self, data: bytes | bytearray, scan: int, *, final: bool) -> list[bytes]:
        if data.find(b"\r", scan) < 0:
            return self._split_lf(data, scan)
        done: list[bytes] = []
        start = 0
        size = len(data)
        limit = self.max_event
        while True:
            match = _BOUNDARY.search(data, scan)
            if match is None:
                break
            end = match.end()
            if end == size and data[end - 1] == _CR and not final:
                # Maybe the first half of CRLF: decide when the next byte comes.
                scan = match.start()
                break
            if end - start > limit:
                return self._give_up(data, start, done)
            done.append(bytes(data[start:end]))
            start = scan = end
        return self._keep(data, start, scan, done)

    def _split_lf(self, data: bytes | bytearray, scan: int) -> list[bytes]:
        # No CR from here on (most streams): a boundary is just LF LF, and
        # bytes.find spots it many times faster than a regex scan.
        done: list[bytes] = []
        start = 0
        limit = self.max_event
        find = data.find
        while (at := find(b"\n\n", scan)) >= 0:
            end = at + 2
            if end - start > limit:
                return self._give_up(data, start, done)
            done.append(bytes(data[start:end]))
            start = scan = end
        return self._keep(data, start, scan, done)

    def _keep(
        self, data: bytes | bytearray, start: int, scan: int, done: list[bytes]
    ) -> list[bytes]:
        """Hold the partial event from ``start`` on; ``scan``: where a boundary may begin."""
        self._handed_out(done)
        size = len(data)
        if size - start > self.max_event:
            return self._give_up(data, start, done)
        if data is self._buf:
            if start:
                del self._buf[:start]
        elif start < size:  # else _buf is still the empty one the chunk was fed past
            self._buf = bytearray(data[start:])
        self._scan = max(scan - start, size - start - _KEEP, 0)
        return done

    def _handed_out(self, done: list[bytes]) -> None:
        if done and self._fresh:
            self._first = done[0]
            self._fresh = False

    def _give_up(self, data: bytes | bytearray, start: int, done: list[bytes]) -> list[bytes]:
        self._handed_out(done)
        self.gave_up = True
        self.overflow = bytes(data[start:])
        self._buf = bytearray()
        return done
