"""What a session token looks like, and how one is cut out of text.

The shape is needed far apart: the core mints and checks tokens, the store
redacts them from audit paths, the HTTP layer from problems and logs. So it
lives here, at the bottom, with no dependency at all: ``vaultd audit`` reads
audit rows without importing aiohttp.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import quote, unquote

TOKEN_PREFIX = "fn_sess_"  # noqa: S105 (a prefix, not a secret)
TOKEN_RE = re.compile(r"fn_sess_[A-Za-z0-9_-]{43}")
# What a listing shows of a token, and what redaction keeps of one.
KEY_PREFIX_LEN = 12
# Looser than TOKEN_RE on purpose: a truncated or padded token is still a
# secret worth hiding.
_TOKEN_LIKE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]+")
# What ``redact_path`` leaves unescaped when it encodes a path again: RFC
# 3986's sub-delimiters, ":", "@" and "/", and "[]" of "[REDACTED]".
_PATH_SAFE = "/:@!$&'()*+,;=[]"


def new_token() -> str:
    raw = secrets.token_bytes(32)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def redact(text: str) -> str:
    """``text`` with anything shaped like a session token cut to its key prefix."""
    return _TOKEN_LIKE.sub(lambda m: m.group(0)[:KEY_PREFIX_LEN] + "[REDACTED]", text)


def redact_path(raw: str) -> str:
    """A still percent-encoded request path, for a log line or an audit row.

    Tokens are cut as by ``redact``, also one the client percent-encoded
    (``fn%5Fsess%5F...``) to slip past a plain match. Then the decoded,
    redacted path is encoded again: decoded, a ``%0a`` would forge a line.
    """
    if "%" in raw:
        decoded = unquote(raw, errors="replace")
        if TOKEN_PREFIX in decoded:
            scrubbed = redact(decoded)
            if scrubbed != decoded:
                return quote(scrubbed, safe=_PATH_SAFE)
    # "sess" is in every token prefix: most paths skip the regex altogether.
    return redact(raw) if "sess" in raw else raw
