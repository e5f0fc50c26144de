"""Proxy policy, free of I/O: where a proxied request goes and what it carries.

Request in, decision out (as mitmproxy's small addons are): the upstream URL,
the headers to send, the session token the client presented. The transport in
``proxy.py`` does the sockets.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict
from yarl import URL

from vaultd.errors import FieldError, ValidationError
from vaultd.services import Service

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
CREDENTIAL_HEADER = "X-Vaultd-Credential"


class BadProxyPath(ValidationError):
    status = 400
    slug = "bad-proxy-path"
    title = "Bad proxy path"


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
    encoded slashes or backslashes (``%2f``), control characters. Such paths
    mean nothing to an API and are how path-confusion attacks start.
    """
    if rest == "":
        return ""
    segments = rest.split("/")
    for i, segment in enumerate(segments):
        decoded = unquote(segment, errors="strict") if "%" in segment else segment
        last = i == len(segments) - 1
        if segment == "" and not last:
            raise _bad("empty path segments (//) are not allowed")
        if decoded in (".", ".."):
            raise _bad("dot segments (. and ..) are not allowed in a proxied path")
        if "/" in decoded or "\\" in decoded:
            raise _bad("encoded slashes are not allowed in a proxied path")
        if not decoded.isprintable():
            raise _bad("control characters are not allowed in a proxied path")
    return rest


@functools.lru_cache(maxsize=256)
def _base(base_url: str) -> URL:
    # Parsed once per service: URL parsing is a visible share of a proxied request.
    return URL(base_url)


def upstream_url(service: Service, rest: str, raw_query: str) -> URL:
    """``base_url`` + ``/rest`` + ``?query``: scheme, host and port are the base's, always."""
    base = _base(service.base_url)
    tail = checked_tail(rest)
    # base_url was checked at config load: no query, no fragment, no trailing /.
    text = service.base_url + "/" + tail
    url = URL(text + "?" + raw_query if raw_query else text, encoded=True)
    # Belt and braces: whatever the path and query held, the origin is the base's.
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or url.user:
        raise _bad("the proxied path would leave the service's host")
    return url


def token_from(headers: Mapping[str, str]) -> str | None:
    """The session token from ``Authorization: Bearer`` or an SDK's key header."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in TOKEN_HEADERS[1:]:
        value = headers.get(name, "").strip()
        if value:
            return value
    return None


def outgoing_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str], service: Service, secret: str
) -> CIMultiDict[str]:
    """The client's headers, minus hop-by-hop, tokens and ``X-Vaultd-*``, plus the key."""
    named_by_connection = {
        token.strip().lower()
        for value in incoming.getall("connection", [])
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named_by_connection | set(TOKEN_HEADERS)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lowered = name.lower()
        if lowered in dropped or lowered.startswith(("x-vaultd-", "proxy-")):
            continue
        out.add(name, value)
    for name, value in service.headers.items():
        if name not in out:
            out[name] = value
    if service.auth == "bearer":
        out["Authorization"] = f"Bearer {secret}"
    elif service.auth == "header":
        out[service.header] = service.template.replace("{secret}", secret)
    elif service.auth == "basic":
        # The stored secret is "user:password", as curl -u takes it.
        out["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
    return out


def with_query_secret(url: URL, service: Service, secret: str) -> URL:
    """For ``auth = "query"``: the key as a query parameter, replacing any the client sent."""
    if service.auth != "query":
        return url
    query: MultiDict[str] = MultiDict(
        (k, v) for k, v in url.query.items() if k != service.query_param
    )
    query[service.query_param] = secret
    return url.with_query(query)


def response_headers(
    upstream: Iterable[tuple[str, str]], *, body_may_change: bool
) -> CIMultiDict[str]:
    """Upstream's headers for the client, minus hop-by-hop and framing we redo."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered.startswith("proxy-"):
            continue
        if body_may_change and lowered == "content-length":
            continue  # redaction may change the length: sent chunked instead
        if lowered == "x-request-id":
            # vaultd's own X-Request-Id is set on every response; the
            # upstream's (which its support asks for) is kept under this name.
            out.add("X-Upstream-Request-Id", value)
            continue
        out.add(name, value)
    return out
