"""``ANY /proxy/{service}/{path}``: the streaming transport (DESIGN 6).

The order is the contract's: refuse what is not allowed before any byte goes
upstream, choose the credential, strip and inject headers (``upstream.py``
decides which), then stream both bodies without buffering either whole,
redacting the key if the upstream echoes it, and record the use behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from vaultd.appkeys import CONFIG, REQUEST_ID, VAULT
from vaultd.audit import AuditEntry, audit_path
from vaultd.config import Config
from vaultd.errors import (
    Forbidden,
    NoCredential,
    NotFound,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnreachable,
    VaultdError,
)
from vaultd.models import Credential
from vaultd.problems import MalformedRequest, MethodNotAllowed, PayloadTooLarge
from vaultd.proxycache import ProxyCache, Secret
from vaultd.services import Service
from vaultd.sessions import Session
from vaultd.upstream import (
    CREDENTIAL_HEADER,
    outgoing_headers,
    response_headers,
    split_proxy_target,
    token_from,
    unscannable_coding,
    upstream_url,
    with_query_secret,
)
from vaultd.usage import UsageRecorder

log = logging.getLogger("vaultd.proxy")

CLIENT = web.AppKey("upstream_client", aiohttp.ClientSession)
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


class UpstreamEncoding(VaultdError):
    """The upstream compressed its answer although vaultd asked for identity."""

    status = 502
    slug = "upstream-encoding"
    title = "Upstream answer cannot be checked"


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


def authorise(cache: ProxyCache, request: web.Request, service: Service) -> Session:
    token = token_from(request.headers)
    if token is None:
        raise Unauthorized("send the session token as Authorization: Bearer <token>")
    session = cache.session(token)
    if not session.has_scope("proxy"):
        raise Forbidden("this token has no proxy scope")
    if not session.allows_service(service.name):
        raise Forbidden(f"this token may not use {service.name}")
    return session


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


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    config = request.app[CONFIG]
    cache = request.app[CACHE]
    cache.refresh()
    usage = request.app[USAGE]
    session: Session | None = None
    credential: Credential | None = None
    service_name = "?"
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
        service = config.services.get(service_name)
        if service is None:
            raise NotFound(f"there is no service {service_name!r}; see GET /api/services")
        session = authorise(cache, request, service)
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
            response, received, status = await _forward(request, url, headers, body, secret, config)
        except VaultdError:
            # A body cut off at the limit surfaces from the client library as a
            # broken upstream connection; the client should hear why.
            if sent[0] > config.max_request_body:
                raise PayloadTooLarge(
                    f"the request body is larger than the limit of {config.max_request_body} bytes"
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
        usage.record(
            AuditEntry(
                at=int(time.time()),
                request_id=request.get(REQUEST_ID, ""),
                session_id=session.id if session else None,
                credential_id=credential.id if credential else None,
                service=service_name[:63],
                method=request.method[:16],
                path=audit_path(rest),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                bytes_in=sent[0],
                bytes_out=received,
            )
        )


async def _forward(
    request: web.Request,
    url: URL,
    headers: CIMultiDict[str],
    body: AsyncIterator[bytes] | None,
    secret: Secret,
    config: Config,
) -> tuple[web.StreamResponse, int, int]:
    client = request.app[CLIENT]
    try:
        upstream_cm = client.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
        )
        upstream = await upstream_cm.__aenter__()
    except PayloadTooLarge:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(
            f"the upstream did not answer within {config.read_timeout}s"
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"the upstream could not be reached ({exc.__class__.__name__})"
        ) from None
    try:
        # A HEAD answer, or a 204/304, has no body to redact: its Content-Length
        # (and its Content-Encoding) stay true.
        bodiless = request.method == "HEAD" or upstream.status in _BODILESS
        coding = unscannable_coding(
            upstream.headers.getall("Content-Encoding", ()),
            upstream.headers.getall("Transfer-Encoding", ()),
        )
        if coding is not None and not bodiless:
            # Decided: refuse, never pass unchecked. vaultd asked for identity,
            # so only a misbehaving upstream gets here; decompressing to scan
            # would break DESIGN 6.4 (bytes as sent) and invite zip bombs, and
            # passing it through would hand an echoed key to the client.
            raise UpstreamEncoding(
                f"the upstream sent a body in the {coding[:40]!r} Content-Encoding or "
                "Transfer-Encoding although vaultd asked for identity; a compressed answer "
                "cannot be checked for the key, so it is not passed on"
            )
        redactor = secret.patterns.redactor()
        reason = upstream.reason
        if (
            reason
            and len(reason) >= secret.patterns.shortest
            and secret.patterns.found_in(reason.encode("utf-8", "replace"))
        ):
            # "401 Invalid key sk-...": the status line is echo space too.
            reason = None  # aiohttp then sends the standard phrase
        response = web.StreamResponse(
            status=upstream.status,
            reason=reason,
            headers=response_headers(
                upstream.raw_headers, body_may_change=not bodiless, patterns=secret.patterns
            ),
        )
        status = upstream.status
        received = 0
        try:
            try:
                await response.prepare(request)
            except ConnectionResetError:
                raise _ClientGone from None
            async for chunk in upstream.content.iter_any():
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
    finally:
        await upstream_cm.__aexit__(None, None, None)


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


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one upstream ``ClientSession`` of the app, with its keep-alive pool."""
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        # Bytes pass as the upstream sent them, and nothing is added that the
        # client did not ask for. (Identity is asked for, and anything else
        # refused: see ``outgoing_headers`` and ``UpstreamEncoding``.)
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        # Cookies from one upstream answer must never ride along on another
        # session's request, and no HTTP(S)_PROXY from the environment may
        # route keys through a host the user did not configure here.
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=client_timeout(app[CONFIG]),
    ) as client:
        app[CLIENT] = client
        yield


async def _usage_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[CACHE] = ProxyCache(app[VAULT])
    recorder = UsageRecorder(
        config.db_path,
        interval=config.usage_flush_interval,
        audit_keep_rows=config.audit_max_rows,
        audit_keep_seconds=config.audit_max_age,
    )
    await recorder.start()
    app[USAGE] = recorder
    try:
        yield
    finally:
        # Runs after in-flight requests have finished: their use is written too.
        await recorder.close()


def setup(app: web.Application) -> None:
    """Add the proxy route and the resources it needs to ``app``."""
    app.cleanup_ctx.append(_client_ctx)
    app.cleanup_ctx.append(_usage_ctx)
    # The whole tail is parsed from the raw target by ``split_proxy_target``.
    app.router.add_route("*", "/proxy/{service}/{path:.*}", handle_proxy)
