"""``ANY /proxy/{service}/{path}``: the streaming transport (DESIGN 6).

The order is the contract's: refuse what is not allowed before any byte goes
upstream, choose the credential, strip and inject headers (``upstream.py``
decides which), then stream both bodies without buffering either whole,
redacting the key if the upstream echoes it, and record the use behind. (An
answer whose body had all arrived with its head, which aiohttp's flow control
bounds, goes out whole in one write.)

``vaultd serve`` hands proxied calls to ``front_door``, which runs the same
checks as the app's middlewares without the router and middleware chain;
``handle_proxy`` is the same proxy as a routed handler, for anything else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict
from yarl import URL

from vaultd.config import Config
from vaultd.core.sessions import Session
from vaultd.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    VaultdError,
)
from vaultd.http.appkeys import CONFIG, REQUEST_ID, VAULT
from vaultd.http.errors import MalformedRequest, MethodNotAllowed, PayloadTooLarge
from vaultd.http.guard import Guard
from vaultd.http.middleware import (
    add_standard_headers,
    new_request_id,
    problem_for,
    set_standard_headers,
    standard_headers,
)
from vaultd.models import Credential
from vaultd.proxy.cache import ProxyCache, Secret
from vaultd.proxy.client import UpstreamClient
from vaultd.proxy.decisions import (
    CREDENTIAL_HEADER,
    outgoing_headers,
    response_headers,
    split_proxy_target,
    token_from,
    unscannable_coding,
    upstream_url,
    with_query_secret,
)
from vaultd.proxy.errors import NoCredential, UpstreamEncoding, UpstreamTimeout, UpstreamUnreachable
from vaultd.proxy.redact import Patterns
from vaultd.proxy.usage import UsageRecorder
from vaultd.services import Service
from vaultd.store.audit import audit_path

log = logging.getLogger("vaultd.proxy")

USAGE = web.AppKey("usage", UsageRecorder)
CACHE = web.AppKey("proxy_cache", ProxyCache)
# Audit statuses for what no HTTP status says once the upstream's went out:
# the client left mid-answer (nginx's 499), or the upstream broke off (502).
CLIENT_CLOSED = 499
STREAM_BROKEN = 502
# TRACE would have the upstream echo the request, key included, by design;
# CONNECT and TRACK mean nothing to an API. (aiohttp's parser already refuses
# the last two; this keeps them refused whatever the parser does.)
REFUSED_METHODS = frozenset({"TRACE", "CONNECT", "TRACK"})
ALLOWED_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# Longer than any name (64) or id: a longer X-Vaultd-Credential is not a
# selector, and is refused before it costs a lookup.
MAX_SELECTOR = 300
# Statuses whose answers have no body (RFC 9110 6.4.1): nothing there to redact.
_BODILESS = frozenset({204, 304})
# What aiohttp's server calls for each request (``web.Server``'s handler).
RequestHandlerFn = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def pick_credential(cache: ProxyCache, service: Service, wanted: str | None) -> Credential:
    """``X-Vaultd-Credential`` (name or id, of this service) or the service's default."""
    if wanted is not None and len(wanted) > MAX_SELECTOR:
        raise MalformedRequest(
            f"{CREDENTIAL_HEADER} must be a credential name or id "
            f"(at most {MAX_SELECTOR} characters)"
        )
    credential = cache.credential(service.name, wanted)
    if credential is None:
        if wanted is None:
            raise NoCredential(
                f"no default credential for {service.name}; add one with: "
                f"vaultd add {service.name} NAME (or choose one with vaultd default)"
            )
        raise NoCredential(f"{service.name} has no credential {wanted!r}")
    if credential.expired():
        raise NoCredential(f"credential {service.name}/{credential.name} has expired")
    return credential


def authenticate(cache: ProxyCache, request: web.Request) -> Session:
    """The active session of the request's token, before anything else is looked up.

    DESIGN 6.1: the token first, so that a client without one learns nothing
    (which services exist, say) from the order of the refusals.
    """
    token = token_from(request.headers)
    if token is None:
        raise Unauthorized("send the session token as Authorization: Bearer <token>")
    return cache.session(token)


def authorise(session: Session, service: Service) -> None:
    """Whether ``session`` may proxy to ``service`` (403 otherwise)."""
    if not session.has_scope("proxy"):
        raise Forbidden("this token has no proxy scope")
    if not session.allows_service(service.name):
        raise Forbidden(f"this token may not use {service.name}")


async def _limited(request: web.Request, limit: int, counter: list[int]) -> AsyncIterator[bytes]:
    """The request body as it arrives, cut off at ``limit`` bytes."""
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return
        counter[0] += len(chunk)
        if counter[0] > limit:
            raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        yield chunk


def client_timeout(config: Config) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )


@dataclass(frozen=True, slots=True)
class Forwarder:
    """What a proxied request needs from the app, gathered once at startup.

    (Per-request ``request.app[...]`` lookups were a visible share of a
    proxied call's CPU time.)
    """

    config: Config
    cache: ProxyCache
    usage: UsageRecorder
    upstream: UpstreamClient

    async def serve(
        self, request: web.Request, request_id: str | None = None
    ) -> web.StreamResponse:
        """One proxied request, from the checks to the audit row."""
        started = time.perf_counter()
        config = self.config
        cache = self.cache
        # A connection of `vaultd serve` numbers its request heads (arrivals.py).
        cache.refresh_for(getattr(request.protocol, "head_arrival", None))
        if request_id is None:
            request_id = request.get(REQUEST_ID, "")
        session: Session | None = None
        service: Service | None = None
        credential: Credential | None = None
        rest = ""
        status = 500
        sent = [0]
        received = 0
        try:
            if request.method in REFUSED_METHODS:
                raise MethodNotAllowed(
                    f"the proxy does not forward {request.method}", allowed=ALLOWED_METHODS
                )
            service_name, rest = split_proxy_target(request.raw_path)
            session = authenticate(cache, request)
            service = config.services.get(service_name)
            if service is None:
                raise NotFound(f"there is no service {service_name!r}; see GET /api/services")
            authorise(session, service)
            url = upstream_url(service, rest, request.rel_url.raw_query_string)
            credential = pick_credential(cache, service, request.headers.get(CREDENTIAL_HEADER))
            secret = cache.secret(credential, service)

            length = request.content_length
            if length is not None and length > config.max_request_body:
                raise PayloadTooLarge(
                    f"the request body is larger than the limit of {config.max_request_body} bytes"
                )
            headers = outgoing_headers(request.headers, service, secret.value)
            url = with_query_secret(url, service, secret.value)
            body = _limited(request, config.max_request_body, sent) if request.body_exists else None
            try:
                response, received, status = await self._forward(
                    request, request_id, url, headers, body, secret
                )
            except VaultdError:
                # A body cut off at the limit surfaces from the client library as a
                # broken upstream connection; the client should hear why.
                if sent[0] > config.max_request_body:
                    raise PayloadTooLarge(
                        "the request body is larger than the limit of "
                        f"{config.max_request_body} bytes"
                    ) from None
                raise
            return response
        except VaultdError as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client's connection is lost.
            status = CLIENT_CLOSED
            raise
        finally:
            # Only requests with a valid session are audited: without one,
            # any local process could push the real rows out past
            # [audit] max_rows. (Refusals before that are in the daemon's
            # log, as failed requests.)
            if session is not None:
                # In audit.ROW_FIELDS order (an AuditRow: see there why a tuple).
                self.usage.record(
                    (
                        int(time.time()),
                        request_id,
                        session.id,
                        credential.id if credential else None,
                        # A configured name, never what the client typed for an
                        # unknown one (which could be anything, its token too).
                        service.name if service is not None else "?",
                        request.method[:16],
                        audit_path(rest),
                        status,
                        round((time.perf_counter() - started) * 1000, 3),
                        sent[0],
                        received,
                    )
                )

    async def _forward(
        self,
        request: web.Request,
        request_id: str,
        url: URL,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
        secret: Secret,
    ) -> tuple[web.StreamResponse, int, int]:
        try:
            upstream = await self.upstream.send(request.method, url, headers, body)
        except PayloadTooLarge:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(
                f"the upstream did not answer within {self.config.read_timeout}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            # OSError: what ClientSession.request would have wrapped in a
            # ClientOSError; a socket error is the upstream's, not a 500.
            raise UpstreamUnreachable(
                f"the upstream could not be reached ({exc.__class__.__name__})"
            ) from None
        async with upstream:
            return await _answer(request, request_id, upstream, secret.patterns)


FORWARDER = web.AppKey("proxy_forwarder", Forwarder)


async def _answer(
    request: web.Request,
    request_id: str,
    upstream: aiohttp.ClientResponse,
    patterns: Patterns,
) -> tuple[web.StreamResponse, int, int]:
    """Pass the upstream's answer on, redacted: (response, bytes received, audit status)."""
    # A HEAD answer, or a 204/304, has no body to redact: its Content-Length
    # (and its Content-Encoding) stay true.
    bodiless = request.method == "HEAD" or upstream.status in _BODILESS
    coding = unscannable_coding(
        upstream.headers.getall(hdrs.CONTENT_ENCODING, ()),
        upstream.headers.getall(hdrs.TRANSFER_ENCODING, ()),
    )
    if coding is not None and not bodiless:
        # Decided: refuse, never pass unchecked. vaultd asked for identity,
        # so only a misbehaving upstream gets here; decompressing to scan
        # would break DESIGN 6.4 (bytes as sent) and invite zip bombs, and
        # passing it through would hand an echoed key to the client. The
        # problem names the header, never its value: that is the upstream's
        # text, and it could be the key it was sent.
        raise UpstreamEncoding(
            f"the upstream's answer has a {coding} other than identity although vaultd "
            "asked for identity; a compressed answer cannot be checked for the key, "
            "so it is not passed on"
        )
    reason = upstream.reason
    if (
        reason
        and len(reason) >= patterns.shortest
        and patterns.found_in(reason.encode("utf-8", "replace"))
    ):
        # "401 Invalid key sk-...": the status line is echo space too.
        reason = None  # aiohttp then sends the standard phrase
    headers = response_headers(
        upstream.raw_headers, body_may_change=not bodiless, patterns=patterns
    )
    # Set here, not only by the app's on_response_prepare signal: the direct
    # path (front_door) has no signal to run.
    add_standard_headers(headers, request_id)
    status = upstream.status
    content = upstream.content
    if not bodiless and content.is_eof():
        # The whole body came with the head (the usual small JSON answer, as
        # aiohttp's flow control bounds what it buffers): redacted at once,
        # it goes out with a Content-Length in one write, where streaming it
        # takes three (head, chunk, end) and their system calls.
        try:
            body = content.read_nowait()
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"the upstream's answer broke off ({exc.__class__.__name__})"
            ) from None
        received = len(body)
        if patterns.found_in(body):
            body = patterns.sub(body)
        whole = web.Response(status=status, reason=reason, headers=headers, body=body)
        try:
            await whole.prepare(request)
            await whole.write_eof()
        except ConnectionResetError:
            status = CLIENT_CLOSED
        return whole, received, status
    response = web.StreamResponse(status=status, reason=reason, headers=headers)
    redactor = patterns.redactor()
    received = 0
    try:
        try:
            await response.prepare(request)
        except ConnectionResetError:
            raise _ClientGone from None
        async for chunk in content.iter_any():
            received += len(chunk)
            out = redactor.feed(chunk)
            if out:
                await _send(response, out)
        tail = redactor.flush()
        if tail:
            await _send(response, tail)
        await _send(response, None)
    except _ClientGone:
        # Nobody is reading any more: stop pulling from the upstream too.
        status = CLIENT_CLOSED
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Headers are gone already: the only honest signal left is to cut
        # the connection, so the client sees a truncated body, not a whole one.
        log.warning(
            "upstream stream broke off after %d bytes: %s", received, exc.__class__.__name__
        )
        status = STREAM_BROKEN
        if request.transport is not None:
            request.transport.close()
    return response, received, status


class _ClientGone(Exception):
    """The client closed its connection while the answer was being streamed."""


async def _send(response: web.StreamResponse, data: bytes | None) -> None:
    """Write ``data`` (``None``: end the body), telling a vanished client apart."""
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except ConnectionResetError:
        # aiohttp's ClientConnectionResetError is one too; it must not be
        # mistaken for the upstream's failure below.
        raise _ClientGone from None


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    """``ANY /proxy/{service}/{path}`` as a routed handler (see also ``front_door``)."""
    return await request.app[FORWARDER].serve(request)


def _direct(request: web.Request, services: Mapping[str, Service]) -> bool:
    """Whether the router would hand ``request`` to ``handle_proxy``, as is.

    The route is ``/proxy/{service}/{path:.*}``, matched on the decoded path:
    without a ``%`` in the raw path, decoded and raw are the same text, and a
    configured service name is a plain segment. ``Expect`` is answered by the
    app before any middleware (a 100 Continue), so such requests go through it.
    """
    path = request.raw_path.partition("?")[0]
    if not path.startswith("/proxy/") or "%" in path:
        return False
    service, slash, _ = path[len("/proxy/") :].partition("/")
    return bool(slash) and service in services and hdrs.EXPECT not in request.headers


def front_door(app: web.Application, routed: RequestHandlerFn) -> RequestHandlerFn:
    """The handler for ``vaultd serve``'s requests: proxied calls directly, the rest via ``routed``.

    aiohttp's router, middleware chain and ``on_response_prepare`` signal are
    generic machinery that cost a proxied call about a tenth of its CPU time
    while doing nothing for it but the checks. Here the same checks run, in
    the same order and from the same code: a request id, ``Guard`` (framing,
    head size, Host, Origin), then the proxy, with errors rendered by
    ``problem_for`` and the standard headers set, as the middlewares and the
    ``on_response_prepare`` signal do. What ``_direct`` does not take goes
    through the app (``routed``) as before.
    """
    forwarder = app.get(FORWARDER)
    if forwarder is None:
        return routed  # an app without the proxy (some tests build one)
    names = [getattr(m, "__name__", None) for m in app.middlewares]
    if names != ["problem_middleware", "guard"] or any(
        hook is not standard_headers for hook in app.on_response_prepare
    ):
        # This path stands in for exactly what create_app installs; whatever
        # else an app adds must see proxied requests too, so they go through it.
        return routed
    guard = Guard(forwarder.config)
    services = forwarder.config.services

    async def serve(request: BaseRequest) -> web.StreamResponse:
        if not isinstance(request, web.Request) or not _direct(request, services):
            return await routed(request)
        request_id = new_request_id()
        request[REQUEST_ID] = request_id
        try:
            refused = guard.refusal(request)
            if refused is None:
                # Its answer carries the standard headers already (``_answer``).
                return await forwarder.serve(request, request_id)
            response: web.StreamResponse = refused
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = problem_for(request, exc, request_id)
        set_standard_headers(response, request_id)
        return response

    return serve


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upstream connection pool, the cache and the usage writer.

    Proxied requests go out through the session's connector by way of
    ``UpstreamClient``, which decides everything a request carries; the
    session only owns the pool and closes it (its own request options, cookie
    jar and environment proxies are never consulted).
    """
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as client:
        cache = app[CACHE] = ProxyCache(app[VAULT])
        recorder = UsageRecorder(
            config.db_path,
            interval=config.usage_flush_interval,
            audit_keep_rows=config.audit_max_rows,
            audit_keep_seconds=config.audit_max_age,
            # Its commits empty the cache; what was in it is looked up again
            # then rather than by the next request (ProxyCache.rewarm).
            after_write=cache.rewarm,
        )
        await recorder.start()
        app[USAGE] = recorder
        app[FORWARDER] = Forwarder(
            config, cache, recorder, UpstreamClient(client, client_timeout(config))
        )
        try:
            yield
        finally:
            # Runs after in-flight requests have finished: their use is written
            # too, before the client's connections close.
            await recorder.close()


def setup(app: web.Application) -> None:
    """Add the proxy route and the resources it needs to ``app``."""
    app.cleanup_ctx.append(_proxy_ctx)
    # The whole tail is parsed from the raw target by ``split_proxy_target``.
    app.router.add_route("*", "/proxy/{service}/{path:.*}", handle_proxy)
