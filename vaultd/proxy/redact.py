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
        "_escaped",
        "_first",
        "_first_byte",
        "_folded",
        "_only",
        "forms",
        "longest",
        "shortest",
    )

    def __init__(self, forms: Iterable[bytes]) -> None:
        unique = {f for f in forms if f}
        if not unique:
            raise ValueError("nothing to redact")
        # Forms written with escapes (``\u002B``, ``&#x2B;``, ``&amp;``) are
        # matched in any letter case: encoders differ in the case of hex
        # digits (Python writes ``\u002b``, .NET ``\u002B``) and mix them.
        # Kept lower-cased; the rest must match byte for byte.
        escaped = {f.lower() for f in unique if _is_escaped(f)}
        exact = {f for f in unique if not _is_escaped(f)}
        self.forms: tuple[bytes, ...] = tuple(sorted(exact, key=lambda f: (-len(f), f)))
        self._escaped: tuple[bytes, ...] = tuple(sorted(escaped, key=lambda f: (-len(f), f)))
        lengths = [len(f) for f in (*self.forms, *self._escaped)]
        self.longest = max(lengths)
        self.shortest = min(lengths)
        # Most keys are URL- and JSON-safe: then there is one exact form, and
        # one ``in`` is the whole check of a chunk without escapes.
        self._only = self.forms[0] if len(self.forms) == 1 else None
        # Longest first: where two forms start at the same byte (a secret and
        # its base64, say) the regex takes the first alternative that matches,
        # so the longer one is replaced whole.
        alternatives = sorted(
            [(len(f), re.escape(f)) for f in self.forms]
            + [(len(f), b"(?i:" + re.escape(f) + b")") for f in self._escaped],
            key=lambda item: (-item[0], item[1]),
        )
        self._any = re.compile(b"|".join(a for _, a in alternatives))
        # Only a byte that starts some form can start a partial match: the
        # hold-back scan jumps between those in C instead of trying every byte.
        firsts = {f[0] for f in self.forms}
        firsts |= {c for f in self._escaped for c in {f[0], bytes([f[0]]).upper()[0]}}
        ordered = sorted(firsts)
        self._first = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in ordered) + b"]")
        # One first byte (the usual case): ``bytes.find`` is cheaper still.
        self._first_byte = ordered[0] if len(ordered) == 1 else None
        # For what an upstream may re-case (header names: Go canonicalises them).
        self._folded = tuple({f.lower() for f in (*self.forms, *self._escaped)})

    def found_in(self, data: bytes) -> bool:
        # One search per form, not the regex: bytes search runs at memory
        # speed, an alternation of a few forms at a tenth of it, and nearly
        # every chunk holds none. ``find``, not ``in``: CPython's
        # bytes.__contains__ first tries its operand as an int, and for bytes
        # raises and clears a TypeError (its message formatted) on every test,
        # which cost more than the search; ``find`` asks for a buffer first.
        only = self._only
        if only is not None:
            if data.find(only) >= 0:
                return True
        else:
            for form in self.forms:
                if data.find(form) >= 0:
                    return True
        # An escaped form needs a backslash or an ampersand: most chunks have
        # neither, and skip the lower-cased copy.
        if self._escaped and (data.find(b"\\") >= 0 or data.find(b"&") >= 0):
            lowered = data.lower()
            for form in self._escaped:
                if lowered.find(form) >= 0:
                    return True
        return False

    def found_in_folded(self, lowered: bytes) -> bool:
        """Whether ``lowered`` (lower-cased by the caller) holds a form in any letter case."""
        # ``find``: see found_in. A loop: any() over a generator costs a frame more.
        for form in self._folded:  # noqa: SIM110
            if lowered.find(form) >= 0:
                return True
        return False

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
            if self._escaped:
                lowered = tail.lower()
                for form in self._escaped:
                    if len(form) > len(lowered) and form.startswith(lowered):
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


def _is_escaped(form: bytes) -> bool:
    """Whether ``form`` is written with JSON ``\\u`` escapes or HTML character references."""
    return b"\\u" in form or b"&" in form
