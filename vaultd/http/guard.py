"""The checks every request passes before any handler: framing, head size, Host, Origin, body type.

Threat T3 (a web page in the user's browser, DNS rebinding) and T6 (requests
smuggled past the proxy's path checks) are answered here, once, for both
ways a request is served: the ``guard`` middleware for routed requests, and
the proxy's direct path (``proxy.direct``), which runs the same ``Guard``.
"""

from __future__ import annotations

import asyncio
import re
from itertools import chain

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from multidict import istr

from vaultd.config import Config
from vaultd.errors import ConfigError, VaultdError
from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.bearer import authenticate
from vaultd.http.connections import notes_of
from vaultd.http.errors import ForbiddenHost, ForbiddenOrigin, UnsupportedMediaType
from vaultd.http.problems import problem_response, status_problem

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
# A Host value: a DNS name or IPv4 literal, or a bracketed IPv6 literal, then
# an optional port. Anything else (userinfo, spaces, a second colon) is refused.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?")
# The request line and headers together. aiohttp bounds each line (8190 bytes)
# and their number (128) but not the sum; nginx refuses heads over 32 KiB and
# Node over 16 KiB, and no SDK comes near either.
MAX_HEAD = 64 * 1024
HEAD_TOO_LARGE = f"the request line and headers are larger than {MAX_HEAD // 1024} KiB"
# Methods whose body is JSON on every /api/ endpoint (T3: a browser can send
# text/plain or a form cross-origin without a preflight, but not JSON).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Header names for lookups are ``istr`` (as aiohttp's ``hdrs``): multidict then
# skips folding the name's case on every lookup of every request.
_SEC_FETCH_SITE = istr("Sec-Fetch-Site")
_SEC_FETCH_MODE = istr("Sec-Fetch-Mode")
_SEC_FETCH_DEST = istr("Sec-Fetch-Dest")
# The daemon's own page (DESIGN 15): its host names, and the paths a browser
# may navigate to from anywhere (they serve the same static page to all).
PAGE_HOSTS = ("127.0.0.1", "localhost")
PAGE_ENTRIES = frozenset({"/ui", "/ui/"})
# Bounds on HostPolicy's memo of answers (a DNS name is at most 253 characters).
_MEMO_HOSTS = 64
_MEMO_HOST_LEN = 270


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host value, lower-cased; ``None`` if it is not one."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    port = match.group(2)
    return match.group(1), None if port is None else int(port)


class HostPolicy:
    """The allow-list of Host values (threat T3: defeats DNS rebinding).

    ``localhost``, ``127.0.0.1`` and ``[::1]`` are allowed bare or with the port
    the request actually arrived on; each ``[server] allowed_hosts`` entry is
    allowed the same way, or, if it names a port, exactly with that port.
    Names are compared as strings, so ``localhost6``, ``127.1`` or ``0177.0.0.1``
    (which may resolve to loopback) are refused like any foreign name.
    """

    def __init__(self, extra: tuple[str, ...]) -> None:
        self.names = set(LOOPBACK_NAMES)
        self.exact: set[tuple[str, int]] = set()
        for entry in extra:
            parsed = split_host(entry)
            if parsed is None:
                raise ConfigError(f"[server] allowed_hosts: {entry!r} is not a host name")
            name, port = parsed
            if port is None:
                self.names.add(name)
            else:
                self.exact.add((name, port))
        self._known: dict[tuple[str, int | None], bool] = {}

    def allows(self, value: str, listening_port: int | None) -> bool:
        # A client sends the same Host on every request: the answer is kept
        # for a few short values rather than parsed again each time.
        key = (value, listening_port)
        known = self._known.get(key)
        if known is None:
            known = self._decide(value, listening_port)
            if len(value) <= _MEMO_HOST_LEN and len(self._known) < _MEMO_HOSTS:
                self._known[key] = known
        return known

    def _decide(self, value: str, listening_port: int | None) -> bool:
        parsed = split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        if (name, port) in self.exact:
            return True
        return name in self.names and (port is None or port == listening_port)


def socket_port(transport: asyncio.BaseTransport | None) -> int | None:
    """The local port of a connection's socket: right for --port, for port 0
    in tests, and for several listeners alike."""
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return None


def _listening_port(request: web.Request) -> int | None:
    # ``vaultd serve``'s connections note the port once when they open
    # (http.connections): asking the transport per request showed in the
    # proxy's profile.
    notes = notes_of(request)
    if notes is None:
        return socket_port(request.transport)
    return notes.listening_port


def framing_fault(request: web.Request) -> str | None:
    """Why the request line or the body's framing cannot be trusted, or None.

    aiohttp's parser lets these through: a request line without a version is
    taken as HTTP/0.9 and the lines after it still as headers (so a CRLF in a
    path turns into a request that reaches the upstream), ``HTTP/2.0`` in a
    text request line is served, an HTTP/1.0 request may be chunked (RFC 9112
    6.1: its framing is faulty), and an absolute-form target
    (``GET http://other.host/api/...``) names a host the Host check never
    sees (T6 refuses it).
    """
    if request.version not in (HttpVersion10, HttpVersion11):
        return "only HTTP/1.0 and HTTP/1.1 requests are accepted"
    if request.version == HttpVersion10 and hdrs.TRANSFER_ENCODING in request.headers:
        return "an HTTP/1.0 request must not carry Transfer-Encoding"
    if not request.raw_path.startswith("/"):
        return "the request target must be a path starting with /"
    return None


def head_size(request: web.Request) -> int:
    """About the bytes of the request line and headers, as the client sent them."""
    line = len(request.method) + len(request.raw_path) + 12  # two spaces, HTTP/1.1, CRLF
    raw = request.raw_headers
    # Names and values, plus ": " and CRLF for each line; summed in C.
    return line + sum(map(len, chain.from_iterable(raw))) + 4 * len(raw)


def check_host(request: web.Request, policy: HostPolicy) -> None:
    # request.host would fall back to this machine's name when Host is missing;
    # the raw header is what a browser sent and what rebinding controls.
    values = request.headers.getall(hdrs.HOST, [])
    if len(values) != 1:
        raise ForbiddenHost("the request must carry exactly one Host header")
    if not policy.allows(values[0], _listening_port(request)):
        raise ForbiddenHost("this Host is not allowed; use 127.0.0.1 or localhost")


def check_origin(request: web.Request, allowed: frozenset[str]) -> None:
    origins = request.headers.getall(hdrs.ORIGIN, [])
    if origins:
        # "null" (sandboxed frames, file: pages) is never on the list unless put there.
        if len(origins) > 1 or (origins[0] not in allowed and not _own_page(request, origins[0])):
            raise ForbiddenOrigin("requests from web pages are refused")
        return
    # Browsers omit Origin on no-cors GETs but mark them here; no other client
    # sends this header, so it costs nothing to honour it.
    site = request.headers.get(_SEC_FETCH_SITE, "").lower()
    if site in ("cross-site", "same-site") and not _page_navigation(request):
        raise ForbiddenOrigin("requests from web pages are refused")


def _own_page(request: web.Request, origin: str) -> bool:
    """Whether ``origin`` is the daemon's own page calling its API with a valid token.

    DESIGN 15: ``http://127.0.0.1:PORT`` or ``http://localhost:PORT``, PORT the
    one this request arrived on (another local port is another program's
    page), on ``/api/`` only, and only with the token of an active session:
    a missing or dead one is refused here as any API call without a valid
    token is (401), so the page can tell its user to log in again. Browsers
    send Origin on the page's own DELETE; another origin cannot put this one
    in a browser's request, and a client outside a browser gains nothing it
    would not have without an Origin.
    """
    port = _listening_port(request)
    if port is None or origin not in {f"http://{host}:{port}" for host in PAGE_HOSTS}:
        return False
    if not request.path.startswith("/api/"):
        return False
    authenticate(request)
    return True


def _page_navigation(request: web.Request) -> bool:
    """A browser opening the page itself (``/ui/``) from a link elsewhere, or from
    the redirect file ``vaultd ui`` writes (a ``file:`` page: cross-site).

    The page is the same static document for everyone and reveals nothing
    (its frame-ancestors CSP keeps it out of frames); what it shows it asks
    the API for with a token no other site has.
    """
    return (
        request.method == "GET"
        and request.path in PAGE_ENTRIES
        and request.headers.get(_SEC_FETCH_MODE, "").lower() == "navigate"
        and request.headers.get(_SEC_FETCH_DEST, "").lower() == "document"
    )


def check_json_body(request: web.Request) -> None:
    if request.method not in _BODY_METHODS or not request.path.startswith("/api/"):
        return
    if request.match_info.http_exception is not None:
        return  # no such route: the router's 404/405 says more than a 415 would
    if request.content_type != "application/json":
        raise UnsupportedMediaType("the body must be sent as Content-Type: application/json")
    if request.charset is not None and request.charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("a JSON body must be UTF-8")


class Guard:
    """The request-line, head-size, Host, Origin and content-type checks, before any handler.

    One object for both ways a request is served: the app's middleware
    (``middleware.checked``) runs it for every routed request, and the
    proxy's direct path (``proxy.direct``) runs the very same checks without
    the middleware chain.
    """

    __slots__ = ("origins", "policy")

    def __init__(self, config: Config) -> None:
        self.policy = HostPolicy(config.allowed_hosts)
        self.origins = frozenset(config.allowed_origins)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The response that refuses ``request`` (or a raised problem), or None to go on."""
        fault = self._check(request)
        if fault is None:
            return None
        response = problem_response(
            status_problem(400, fault), request[REQUEST_ID], request.raw_path
        )
        # Where one request ends is in doubt: nothing more is read from
        # this connection, so no bytes after it can pass as a request.
        response.force_close()
        return response

    def passes(self, request: web.Request) -> bool:
        """Whether ``refusal`` would let ``request`` through, with nothing sent or raised."""
        try:
            return self._check(request) is None
        except VaultdError:
            return False

    def _check(self, request: web.Request) -> str | None:
        """Every check in order: a framing fault is returned (its answer must close the
        connection), any other refusal raised as its problem."""
        fault = framing_fault(request)
        if fault is not None:
            return fault
        if head_size(request) > MAX_HEAD:
            # A head that came whole in one read; one sent piecemeal is
            # refused by the connection before it ends (daemon.connection_fast).
            raise status_problem(431, HEAD_TOO_LARGE)
        check_host(request, self.policy)
        check_origin(request, self.origins)
        check_json_body(request)
        return None
