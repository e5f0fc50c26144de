"""Streaming redaction of one secret from a response body (DESIGN 6, step 7).

An upstream that echoes the key it was sent (an error page quoting the
request, say) must not hand it to the client. The secret can straddle two
chunks, so the end of each chunk that could be the start of the secret is held
back until the next chunk (or the end) decides.
"""

from __future__ import annotations

REPLACEMENT = b"[REDACTED]"


class Redactor:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("nothing to redact")
        self._secret = secret
        self._held = b""

    def _partial_suffix(self, data: bytes) -> int:
        """Length of the longest end of ``data`` that is a proper prefix of the secret."""
        longest = min(len(self._secret) - 1, len(data))
        first = self._secret[:1]
        # Only a position holding the secret's first byte can start a prefix.
        start = data.find(first, len(data) - longest)
        while start != -1:
            if self._secret.startswith(data[start:]):
                return len(data) - start
            start = data.find(first, start + 1)
        return 0

    def feed(self, chunk: bytes) -> bytes:
        """What can be sent now; a possible start of the secret is held back."""
        data = (self._held + chunk).replace(self._secret, REPLACEMENT)
        keep = self._partial_suffix(data)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        """The held-back bytes at the end of the body (they were not the secret)."""
        rest, self._held = self._held, b""
        return rest
