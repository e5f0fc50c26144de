"""Streaming redaction of the injected secret, in every form, from a response (DESIGN 6, step 7).

An upstream that echoes the key it was sent (an error page quoting the
request, say) must not hand it to the client, and it may echo it written
differently from how vaultd holds it: base64 inside a ``Basic`` header,
percent-encoded in a URL, JSON-escaped in a body. ``Patterns`` holds all those
forms, compiled once per credential; a ``Redactor`` is the per-response state.

A form can straddle two chunks, so the end of each chunk that could be the
start of a form is held back until the next chunk (or the end) decides. At
most the longest form's length minus one byte is ever held, so SSE events are
delayed only while they might be a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REPLACEMENT = b"[REDACTED]"


class Patterns:
    """The byte strings to redact, compiled for the whole-body and the streaming checks.

    Built once per credential (the proxy cache keeps it beside the secret), so
    a request pays only for the searches, never for building them.
    """

    __slots__ = (
        "_any",
        "_first",
        "_first_byte",
        "_folded",
        "_only",
        "forms",
        "longest",
        "shortest",
    )

    def __init__(self, forms: Iterable[bytes]) -> None:
        # Longest first: where two forms start at the same byte (a secret and
        # its base64, say) the regex takes the first alternative that matches,
        # so the longer one is replaced whole.
        unique = sorted({f for f in forms if f}, key=lambda f: (-len(f), f))
        if not unique:
            raise ValueError("nothing to redact")
        self.forms: tuple[bytes, ...] = tuple(unique)
        self.longest = len(unique[0])
        self.shortest = len(unique[-1])
        # Most keys are URL- and JSON-safe: then there is one form, and one
        # ``in`` is the whole check.
        self._only = unique[0] if len(unique) == 1 else None
        self._any = re.compile(b"|".join(re.escape(f) for f in unique))
        # Only a byte that starts some form can start a partial match: the
        # hold-back scan jumps between those in C instead of trying every byte.
        firsts = sorted({f[0] for f in unique})
        self._first = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in firsts) + b"]")
        # One first byte (the usual case): ``bytes.find`` is cheaper still.
        self._first_byte = firsts[0] if len(firsts) == 1 else None
        # For what an upstream may re-case (header names: Go canonicalises them).
        self._folded = tuple({f.lower() for f in unique})

    def found_in(self, data: bytes) -> bool:
        # One ``in`` per form, not the regex: bytes search runs at memory
        # speed, an alternation of a few forms at a tenth of it, and nearly
        # every chunk holds none.
        if self._only is not None:
            return self._only in data
        return any(map(data.__contains__, self.forms))

    def found_in_folded(self, lowered: bytes) -> bool:
        """Whether ``lowered`` (lower-cased by the caller) holds a form in any letter case."""
        return any(map(lowered.__contains__, self._folded))

    def search(self, data: bytes, pos: int) -> re.Match[bytes] | None:
        """The leftmost (then longest) form in ``data`` at or after ``pos``."""
        return self._any.search(data, pos)

    def sub(self, data: bytes) -> bytes:
        """``data`` with every form replaced: what a whole body redacts to."""
        return self._any.sub(REPLACEMENT, data)

    def hold_from(self, data: bytes, pos: int) -> int:
        """The first index >= ``pos`` from which ``data`` is a proper prefix of a form.

        ``len(data)`` if there is none. Only the last ``longest - 1`` bytes can
        be such a prefix, so that is all this looks at.
        """
        size = len(data)
        start = size - self.longest + 1
        if start < pos:
            start = pos
        at = self._next_first(data, start)
        while at != -1:
            tail = data[at:]
            for form in self.forms:
                if len(form) > len(tail) and form.startswith(tail):
                    return at
            at = self._next_first(data, at + 1)
        return size

    def _next_first(self, data: bytes, start: int) -> int:
        """The index of the next byte at or after ``start`` that starts a form, or -1."""
        if self._first_byte is not None:
            return data.find(self._first_byte, start)
        found = self._first.search(data, start)
        return -1 if found is None else found.start()

    def redactor(self) -> Redactor:
        return Redactor(self)


class Redactor:
    """Feed a body chunk by chunk; the output equals ``Patterns.sub`` of the whole body."""

    __slots__ = ("_held", "_patterns")

    def __init__(self, patterns: Patterns) -> None:
        self._patterns = patterns
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """What can be sent now; a possible start of a form is held back."""
        data = self._held + chunk if self._held else chunk
        patterns = self._patterns
        if not patterns.found_in(data):
            # The hot path: nothing to replace, send all but a possible start.
            hold = patterns.hold_from(data, 0)
            self._held = data[hold:]
            return data if hold == len(data) else data[:hold]
        out: list[bytes] = []
        pos = 0
        while True:
            # Every match decision before ``hold`` is final: no form starting
            # there reaches past the data we have. A match at or after it
            # might yet grow into a longer form, or not be one, so it waits.
            hold = patterns.hold_from(data, pos)
            match = patterns.search(data, pos)
            if match is None or match.start() >= hold:
                break
            out.append(data[pos : match.start()])
            out.append(REPLACEMENT)
            pos = match.end()
        self._held = data[hold:]
        out.append(data[pos:hold])
        return b"".join(out)

    def flush(self) -> bytes:
        """The held-back bytes at the end of the body, redacted now that nothing follows.

        They may hold a whole form that waited to see whether a longer one
        (the secret and its ``"`` escaped, say) would follow.
        """
        rest, self._held = self._held, b""
        return self._patterns.sub(rest) if rest and self._patterns.found_in(rest) else rest
