"""Proxy policy, free of I/O: where a proxied request goes and what it carries.

Request in, decision out (as mitmproxy's small addons are): the upstream URL,
the headers to send, the session token the client presented. The transport
(``forward``, ``answer`` and the clients) does the sockets.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import operator
import re
from collections.abc import Sequence
from urllib.parse import quote, unquote, unquote_plus, unquote_to_bytes

from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from vaultd.errors import FieldError
from vaultd.proxy.errors import BadProxyHeader, BadProxyPath
from vaultd.proxy.redact import Patterns
from vaultd.services import Service
from vaultd.tokens import TOKEN_PREFIX

# RFC 9110 7.6.1 hop-by-hop fields, plus Host (set from the upstream URL) and
# the headers that would forward where the request came from.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# Where an unmodified SDK puts the "API key" (our session token, here).
TOKEN_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")
CREDENTIAL_HEADER = istr("X-Vaultd-Credential")
# The names these decisions read, as ``istr`` (as aiohttp's ``hdrs`` has
# them, without importing aiohttp: this module is pure).
_AUTHORIZATION = istr("Authorization")
_CONNECTION = istr("Connection")
_CONTENT_ENCODING = istr("Content-Encoding")
_TRANSFER_ENCODING = istr("Transfer-Encoding")
# As ``istr`` (aiohttp's ``hdrs`` are too), multidict skips folding their case
# on each lookup.
_SDK_KEY_HEADERS = tuple(istr(name) for name in TOKEN_HEADERS[1:])
# Cookies never cross the vault, either way. A local tool has no business
# holding an upstream's session cookie (it would be a second credential that
# vaultd neither stores nor revokes), and the client's cookies (for
# 127.0.0.1, any local web app's) are not the upstream's business. Deliberate.
_NEVER_FORWARDED = frozenset({"cookie", "cookie2", "accept-encoding"})
# ``Expect: 100-continue`` is between the client and vaultd, whose server
# answers it; passed on, it would have the upstream wait on an interim answer
# that means nothing to vaultd's client library (RFC 9110 10.1.1: hop-by-hop
# in effect for a proxy that does not forward the 100 itself).
_NOT_END_TO_END = frozenset({"expect"})
_NEVER_RETURNED = frozenset({"set-cookie", "set-cookie2"})
_DROPPED_OUTGOING = HOP_BY_HOP | _NEVER_FORWARDED | _NOT_END_TO_END | frozenset(TOKEN_HEADERS)
# A part of an answer that echoes the key holds a slice of it that the
# redaction cannot tell from any other text: ranges only where a service
# opts in ([services.NAME] allow_range).
_DROPPED_OUTGOING_NO_RANGE = _DROPPED_OUTGOING | frozenset({"range", "if-range"})
# ``response_headers``: names (lower-cased bytes) never passed back. CORS
# headers are the daemon's to set (never, threat T3), not an upstream's; a
# Content-Length goes when redaction may change the body's length (the answer
# is then sent chunked, or with its own length once whole).
_NOT_RETURNED = frozenset(name.encode() for name in HOP_BY_HOP | _NEVER_RETURNED)
_NOT_RETURNED_WHEN_BODY_MAY_CHANGE = _NOT_RETURNED | {b"content-length"}
_NOT_RETURNED_PREFIXES = (b"proxy-", b"access-control-")
# Redaction can only scan bytes as they will be read: see ``unscannable_coding``.
_SCANNABLE_CODINGS = frozenset({"", "identity"})
_SCANNABLE_TRANSFER_CODINGS = frozenset({"", "identity", "chunked"})
# A percent escape left after decoding once: the client encoded twice, which
# upstreams and the proxies before them decode a different number of times.
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# A percent escape with a hex letter in it (``quote`` writes them upper-case).
_ESCAPE_WITH_LETTER = re.compile(r"%[0-9A-F][A-F]|%[A-F][0-9]")
_GO_HTML_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"})
# What .NET's System.Text.Json escapes by default besides non-ASCII and control
# characters (its JavaScriptEncoder.Default): HTML-sensitive characters and "+".
_DOTNET_ESCAPED = frozenset("\"&'+<>`")
# Characters HTML encoders write as references: decimal, hexadecimal, named.
_HTML_REFERENCES = {
    char: (f"&#{ord(char)};", f"&#x{ord(char):x};", name)
    for char, name in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ('"', "&quot;"),
        ("'", "&apos;"),
        ("+", "&#43;"),
    )
}
# The shortest part of a basic-auth secret redacted on its own: shorter ones
# would replace ordinary words in every answer.
_MIN_PART = 8


def _bad(message: str) -> BadProxyPath:
    return BadProxyPath(FieldError("", message))


def split_proxy_target(raw_path: str) -> tuple[str, str]:
    """``/proxy/{service}/{rest}`` (still percent-encoded) -> (service, rest).

    Works on the raw request target so that nothing aiohttp decoded can hide a
    trick; absolute-form targets (``http://host/...``) are refused outright.
    """
    if not raw_path.startswith("/proxy/"):
        raise _bad("the request target must be a path starting with /proxy/")
    path = raw_path.split("?", 1)[0]
    service, _, rest = path[len("/proxy/") :].partition("/")
    return unquote(service), rest


def checked_tail(rest: str) -> str:
    """The encoded path tail, if every segment is a plain name.

    Refused: empty segments (``//host``), dot segments, also encoded (``%2e%2e``),
    encoded slashes or backslashes (``%2f``), control characters, escapes that
    are not UTF-8 (``%ff``), ``;`` (path parameters, which some servers strip
    before routing and others do not) and double encoding (``%252e``). Such
    paths mean nothing to an API and are how path-confusion attacks start.
    """
    if rest == "":
        return ""
    segments = rest.split("/")
    for i, segment in enumerate(segments):
        if "%" in segment:
            try:
                decoded = unquote(segment, errors="strict")
            except UnicodeDecodeError:
                raise _bad("percent escapes in a proxied path must be UTF-8") from None
            if _ESCAPE.search(decoded):
                raise _bad("double percent-encoding (%25XX) is not allowed in a proxied path")
        else:
            decoded = segment
        last = i == len(segments) - 1
        if segment == "" and not last:
            raise _bad("empty path segments (//) are not allowed")
        if decoded in (".", ".."):
            raise _bad("dot segments (. and ..) are not allowed in a proxied path")
        if "/" in decoded or "\\" in decoded:
            raise _bad("encoded slashes are not allowed in a proxied path")
        if ";" in decoded:
            raise _bad("path parameters (;) are not allowed in a proxied path")
        if TOKEN_PREFIX in decoded:
            # Headers carry the token; one in the path is a mistake (or a
            # probe), and forwarding it would hand the upstream our token.
            raise _bad("a session token does not belong in a proxied path; send it as a header")
        if not decoded.isprintable():
            raise _bad("control characters are not allowed in a proxied path")
    return rest


def upstream_path(rest: str) -> str:
    """The proxied path as the upstream reads it: escapes decoded, no trailing slash.

    For decisions about what a request is (which endpoint, so how it is
    billed). ``checked_tail`` refuses what decodes to a slash, a dot segment
    or a control character before any of it is sent, so decoding here cannot
    make one path look like another.
    """
    return policy_path(rest).rstrip("/")


def policy_path(rest: str) -> str:
    """The path a request policy matches (DESIGN 11): ``/`` + the tail, every escape
    decoded, a trailing slash kept. ``rest`` must have passed ``checked_tail``."""
    # Most paths have no escape: unquote (a Python call) would give them back as they are.
    return "/" + unquote(rest) if "%" in rest else "/" + rest


# RFC 3986 "pchar" less the escape sign: what a path segment may hold as it is.
# (``quote`` keeps letters, digits and "_.-~" too.)
_PATH_SAFE = "/!$&'()*+,;=:@"


def canonical_tail(path: str) -> str:
    """``path`` (as ``policy_path`` gives it) written out again for the upstream: what a
    policy matched is exactly what is sent, however the client escaped it."""
    return quote(path[1:], safe=_PATH_SAFE)


@functools.lru_cache(maxsize=256)
def _base(base_url: str) -> URL:
    # Parsed once per service: URL parsing is a visible share of a proxied request.
    return URL(base_url)


def upstream_url(service: Service, rest: str, raw_query: str) -> URL:
    """``base_url`` + ``/rest`` + ``?query``: scheme, host and port are the base's, always."""
    if "sess" in rest or "sess" in raw_query or "%" in rest or "%" in raw_query:
        # What may name a session token (also percent-encoded) is built each
        # time and not kept in the memo below.
        return _build_url(service.base_url, rest, raw_query)
    return _memo_url(service.base_url, rest, raw_query)


def _build_url(base_url: str, rest: str, raw_query: str) -> URL:
    base = _base(base_url)
    tail = checked_tail(rest)
    raw_query = without_tokens(raw_query)
    # base_url was checked at config load: no query, no fragment, no trailing /.
    text = base_url + "/" + tail
    url = URL(text + "?" + raw_query if raw_query else text, encoded=True)
    # Belt and braces: whatever the path and query held, the origin is the base's.
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or url.user:
        raise _bad("the proxied path would leave the service's host")
    return url


# A client calls the same few endpoints over and over, and building and
# checking the URL was a visible share of a proxied request. A pure function
# of its arguments; a refused path raises, and exceptions are not memoised.
_memo_url = functools.lru_cache(maxsize=256)(_build_url)


def without_tokens(raw_query: str) -> str:
    """The client's query minus every parameter that carries a vaultd session token.

    An SDK that puts its "API key" in the query (``?key=``) would otherwise
    hand our token to the upstream, which has no use for it.
    """
    # The token prefix holds "sess" unless an "s" or an "e" of it is
    # percent-encoded (%73, %65: no letters, so no case to fold): this cheap
    # test spares nearly every query the per-parameter decoding.
    if "sess" not in raw_query and "%73" not in raw_query and "%65" not in raw_query:
        return raw_query
    return "&".join(p for p in raw_query.split("&") if TOKEN_PREFIX not in unquote_plus(p))


def token_from(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str | None:
    """The session token from ``Authorization: Bearer`` or an SDK's key header."""
    auth = headers.get(_AUTHORIZATION, "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in _SDK_KEY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value
    return None


def outgoing_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str], service: Service, secret: str
) -> CIMultiDict[str]:
    """The client's headers, minus hop-by-hop, tokens and ``X-Vaultd-*``, plus the key."""
    dropped = _DROPPED_OUTGOING if service.allow_range else _DROPPED_OUTGOING_NO_RANGE
    connection = incoming.getall(_CONNECTION, None)  # most requests have none
    if connection is not None:
        # RFC 9110 7.6.1: what Connection names is hop-by-hop too.
        dropped = dropped | {
            token.strip().lower() for value in connection for token in value.split(",")
        }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lowered = name.lower()
        if lowered in dropped or lowered.startswith(("x-vaultd-", "proxy-")):
            continue
        if not value.isascii():
            _check_utf8(name, value)
        out.add(name, value)
    for name, value in service.headers.items():
        if name not in out:
            out[name] = value
    # Whatever the client (or a service's default headers) would accept: the
    # redaction of step 7 can only scan an uncompressed answer, so that is the
    # only kind asked for. This overrides DESIGN 6.4's "Content-Encoding bytes
    # pass as they are": there are none to pass, as the README says.
    out["Accept-Encoding"] = "identity"
    if service.auth == "bearer":
        out["Authorization"] = f"Bearer {secret}"
    elif service.auth == "header":
        out[service.header] = service.template.replace("{secret}", secret)
    elif service.auth == "basic":
        # The stored secret is "user:password", as curl -u takes it.
        out["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
    return out


def _check_utf8(name: str, value: str) -> None:
    """Refuse a header value whose bytes were not UTF-8.

    aiohttp reads such bytes as lone surrogates and its client writes them
    out as nothing: the upstream would get other bytes than the client sent.
    What cannot pass unchanged does not pass. (Valid UTF-8 passes as sent.)
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadProxyHeader(
            FieldError(
                "",
                f"the header {name[:64]!r} holds bytes that are not UTF-8; "
                "vaultd forwards headers only byte for byte",
            )
        ) from None


def query_value(secret: str) -> str:
    """The secret as a query value: every reserved character escaped."""
    return quote(secret, safe="")


def with_query_secret(url: URL, service: Service, secret: str) -> URL:
    """For ``auth = "query"``: the key as a query parameter, replacing any the client sent.

    The client's other parameters keep their exact encoding (a signed query
    must stay byte for byte what was signed).
    """
    if service.auth != "query":
        return url
    name = service.query_param
    pairs = [
        pair
        for pair in url.raw_query_string.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) != name
    ]
    pairs.append(f"{name}={query_value(secret)}")
    return URL(str(url).partition("?")[0] + "?" + "&".join(pairs), encoded=True)


def secret_forms(service: Service, secret: str) -> list[bytes]:
    """Every way the injected secret may come back from the upstream, as bytes.

    What was sent (the secret, its basic-auth base64, its query escape), as
    URLs, forms and JSON encoders write it again. Computed once per credential
    by the proxy cache, never per request.
    """
    texts = {secret, query_value(secret), quote(secret), quote(secret, safe="").replace("%20", "+")}
    # RFC 3986 allows lower-case hex digits in escapes, and some encoders
    # (and servers that re-encode what they parsed) write them.
    texts.update([_ESCAPE_WITH_LETTER.sub(lambda m: m.group(0).lower(), text) for text in texts])
    if service.auth == "basic":
        # Unpadded, so that it also matches inside a padded or re-wrapped copy.
        texts.add(base64.b64encode(secret.encode("utf-8")).decode("ascii").rstrip("="))
        _user, sep, password = secret.partition(":")
        if sep and len(password) >= _MIN_PART:
            texts.add(password)
    for text in list(texts):
        escaped = json.dumps(text)[1:-1]
        unicode = json.dumps(text, ensure_ascii=False)[1:-1]
        # As json.dumps writes it, as an encoder that keeps non-ASCII does, as
        # encoders that escape "/" (PHP's json_encode) do, as Go's
        # encoding/json does (non-ASCII kept, "&", "<" and ">" escaped), as
        # .NET's System.Text.Json does (non-ASCII and "&'+<>`" as \uXXXX),
        # and with every character escaped. (Redaction matches \u escapes in
        # any letter case: Patterns.)
        texts.update(
            (
                escaped,
                unicode,
                escaped.replace("/", "\\/"),
                unicode.translate(_GO_HTML_ESCAPES),
                _json_escape(text, _DOTNET_ESCAPED),
                _json_escape(text, None),
            )
        )
    # HTML character references, as templates and HTML encoders write the
    # characters they escape: decimal, hexadecimal and named.
    texts.update(_html_forms(secret))
    return [text.encode("utf-8") for text in texts if text]


def _json_escape(text: str, only: frozenset[str] | None) -> str:
    """``text`` as a JSON string's inside, with the characters in ``only`` (every one
    if None), and every non-ASCII or control one, as ``\\uXXXX`` escapes (UTF-16)."""
    out: list[str] = []
    for char in text:
        if only is None or char in only or not char.isascii() or not char.isprintable():
            units = char.encode("utf-16-be")
            out.extend(f"\\u{units[i : i + 2].hex()}" for i in range(0, len(units), 2))
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _html_forms(text: str) -> set[str]:
    """``text`` with the characters HTML escapers escape written as character references.

    Each such character as ``&#N;``, ``&#xH;`` or its name; every mix of those
    while there are at most three such characters, and each style throughout
    beyond that (a mix of more is not what an encoder writes).
    """
    special = [i for i, char in enumerate(text) if char in _HTML_REFERENCES]
    if not special:
        return set()
    styles = range(3)

    def write(choice: Sequence[int]) -> str:
        chars = list(text)
        for index, style in zip(special, choice, strict=True):
            chars[index] = _HTML_REFERENCES[text[index]][style]
        return "".join(chars)

    if len(special) <= 3:
        return {write(choice) for choice in itertools.product(styles, repeat=len(special))}
    return {write([style] * len(special)) for style in styles}


def unscannable_coding(
    content_codings: Sequence[str], transfer_codings: Sequence[str] = ()
) -> str | None:
    """The name of the header that leaves the answer's body compressed, if any.

    vaultd asks for identity (``outgoing_headers``); an upstream that
    compresses anyway sends bytes in which an echoed key cannot be found
    without decompressing them, which DESIGN 6.4 rules out. The proxy refuses
    such an answer (502) rather than pass on what it could not check. A
    transfer coding other than chunked (``Transfer-Encoding: gzip, chunked``)
    counts too: aiohttp undoes only the chunking and hands over the gzip.
    Only the header's name is returned: its value is the upstream's text,
    which could be anything it received (the key), so it is never repeated.
    """
    for name, values, allowed in (
        (_CONTENT_ENCODING, content_codings, _SCANNABLE_CODINGS),
        (_TRANSFER_ENCODING, transfer_codings, _SCANNABLE_TRANSFER_CODINGS),
    ):
        for value in values:
            for coding in value.split(","):
                if coding.strip().lower() not in allowed:
                    return str(name)
    return None


def _scrub_location(value: bytes, patterns: Patterns) -> bytes:
    """A redirect target without the query parameters that carry the key.

    A ``query``-auth upstream that redirects to its own URL (pagination, a
    moved endpoint) repeats the key there, in whatever escaping it likes; a
    parameter is dropped if it holds any form of the key, as sent or decoded.
    """
    target, hash_mark, fragment = value.partition(b"#")
    path, question, query = target.partition(b"?")
    if question:
        kept = [
            pair
            for pair in query.split(b"&")
            if not patterns.found_in(pair)
            and not patterns.found_in(unquote_to_bytes(pair.replace(b"+", b" ")))
        ]
        target = path + (b"?" + b"&".join(kept) if kept else b"")
    return patterns.sub(target + hash_mark + fragment)


# (name, value) pairs taken apart in C: a generator's frame per header was
# most of what joining them cost.
_NAME, _VALUE = operator.itemgetter(0), operator.itemgetter(1)


def response_headers(
    raw: Sequence[tuple[bytes, bytes]], *, body_may_change: bool, patterns: Patterns
) -> CIMultiDict[str]:
    """Upstream's headers for the client: no hop-by-hop, no cookies, no CORS, no form of the key."""
    # One search over all values at once: nearly every answer has no key in
    # its headers, and then no value is looked at twice.
    leaky = patterns.found_in(b"\n".join(map(_VALUE, raw)))
    # Names likewise, in any letter case: an upstream may name a header after
    # what it received (and re-case it), and a name cannot be redacted.
    leaky_names = patterns.found_in_folded(b"\n".join(map(_NAME, raw)).lower())
    # Compared as bytes, lower-cased: only what is kept is decoded.
    dropped = _NOT_RETURNED_WHEN_BODY_MAY_CHANGE if body_may_change else _NOT_RETURNED
    kept: list[tuple[str, str]] = []
    named_by_connection: list[str] = []
    for raw_name, raw_value in raw:
        lowered = raw_name.lower()
        if lowered in dropped or lowered.startswith(_NOT_RETURNED_PREFIXES):
            if lowered == b"connection":
                named_by_connection.extend(raw_value.decode("latin-1").split(","))
            continue
        if leaky_names and patterns.found_in_folded(lowered):
            continue  # a header named after the key goes whole
        if lowered == b"location":
            raw_value = _scrub_location(raw_value, patterns)
        elif leaky:
            raw_value = patterns.sub(raw_value)
        if lowered == b"x-request-id":
            # vaultd's own X-Request-Id is set on every response; the
            # upstream's (which its support asks for) is kept under this name.
            kept.append(("X-Upstream-Request-Id", raw_value.decode("latin-1")))
        else:
            kept.append((raw_name.decode("latin-1"), raw_value.decode("latin-1")))
    out: CIMultiDict[str] = CIMultiDict(kept)
    for token in named_by_connection:
        # RFC 9110 7.6.1: what the upstream's Connection names is hop-by-hop too.
        out.popall(token.strip(), None)
    return out
