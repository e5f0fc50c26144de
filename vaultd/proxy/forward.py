"""One proxied request, in the contract's order (DESIGN 6).

``Forwarder.admit`` refuses what is not allowed before any byte goes
upstream: the method, the path, the token, the service, the session's
policy (DESIGN 11: method, path, a model in the path), the credential, the
body's declared size; it returns what to send (``decisions`` chose the URL
and headers). Where a decision needs the body (the policy's models, an
OpenAI stream's usage), ``inspection`` reads it next. Last the limits
(DESIGN 10) count the request in. ``Forwarder.serve`` then sends it through
the upstream client, relays the answer (``answer``) through a meter, and
records the use behind (``settling``): the audit row, with the tokens and
cost, also for a refusal after the token was checked, and the counters the
limits are checked against; under a token or cost budget as the handler
ends, otherwise with the other requests that ended in the same turn of the
event loop (``Forwarder.settle_behind``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from vaultd.config import Config
from vaultd.core.limits import needs_metering
from vaultd.core.policy import Policy
from vaultd.core.sessions import Session
from vaultd.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    VaultdError,
)
from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.connections import notes_of
from vaultd.http.errors import MalformedRequest, MethodNotAllowed, PayloadTooLarge
from vaultd.models import Credential
from vaultd.prices import PriceTable
from vaultd.proxy.answer import CLIENT_CLOSED, relay_answer
from vaultd.proxy.attempt import Attempt, Outgoing, audit_row
from vaultd.proxy.cache import ProxyCache
from vaultd.proxy.client import UpstreamClient
from vaultd.proxy.counters import Counters
from vaultd.proxy.decisions import (
    CREDENTIAL_HEADER,
    outgoing_headers,
    split_proxy_target,
    token_from,
    upstream_path,
    upstream_url,
    with_query_secret,
)
from vaultd.proxy.errors import (
    LimitExceeded,
    NoCredential,
    RequestBodyTimeout,
    Unmeterable,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from vaultd.proxy.inflight import InFlight
from vaultd.proxy.inspection import inspected, needs_body
from vaultd.proxy.metering import Billing, billing
from vaultd.proxy.policy import credential_chosen, credential_name, route
from vaultd.proxy.settling import settle
from vaultd.proxy.usage import UsageRecorder
from vaultd.services import Service
from vaultd.sources.catalog import Pending
from vaultd.sources.source import Sources

log = logging.getLogger("vaultd.proxy")
_new_tuple = tuple.__new__
# A request that has ended, as it is settled: the request, its id, what it
# came to, and the seconds from its start to its answer's end.
Settled = tuple[web.Request, str, "Attempt", float]

# TRACE would have the upstream echo the request, key included, by design;
# CONNECT and TRACK mean nothing to an API. (aiohttp's parser already refuses
# the last two; this keeps them refused whatever the parser does.)
REFUSED_METHODS = frozenset({"TRACE", "CONNECT", "TRACK"})
ALLOWED_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# Longer than any name (64) or id: a longer X-Vaultd-Credential is not a
# selector, and is refused before it costs a lookup.
MAX_SELECTOR = 300


def pick_credential(
    cache: ProxyCache,
    service: Service,
    wanted: str | None,
    policy: Policy | None = None,
    *,
    wait: bool = True,
) -> Credential:
    """``X-Vaultd-Credential`` (name or id, of this service) or the service's default;
    under a policy's ``credential``, that one only. (``wait``: see ``Forwarder.admit``.)"""
    if wanted is not None and len(wanted) > MAX_SELECTOR:
        raise MalformedRequest(
            f"{CREDENTIAL_HEADER} must be a credential name or id "
            f"(at most {MAX_SELECTOR} characters)"
        )
    name = wanted if policy is None else credential_name(policy, service.name, wanted)
    credential = cache.credential(service.name, name, wait=wait)
    if credential is None:
        if name is None:
            raise NoCredential(
                f"no default credential for {service.name}; add one with: "
                f"vaultd add {service.name} NAME (or choose one with vaultd default)"
            )
        if policy is not None and name == policy.credential:
            raise NoCredential(
                f"{service.name} has no credential {name!r}, the one this session may use"
            )
        raise NoCredential(f"{service.name} has no credential {name!r}")
    if policy is not None:
        credential_chosen(policy, credential.name)
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


async def _limited(request: web.Request, attempt: Attempt, config: Config) -> AsyncIterator[bytes]:
    """The request body as it arrives: cut off at ``max_request_body`` bytes, and at
    ``body_timeout`` seconds without a byte (a stalled body holds an upstream connection)."""
    limit = config.max_request_body
    counter = attempt.sent
    while True:
        try:
            async with asyncio.timeout(config.body_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            attempt.stalled = True
            raise _stalled(config) from None
        if not chunk:
            return
        counter[0] += len(chunk)
        if counter[0] > limit:
            raise _too_large(config)
        yield chunk


def _too_large(config: Config) -> PayloadTooLarge:
    limit = config.max_request_body
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


def _stalled(config: Config) -> RequestBodyTimeout:
    return RequestBodyTimeout(f"no byte of the request body arrived for {config.body_timeout}s")


@dataclass(slots=True)
class Forwarder:
    """What a proxied request needs from the app, gathered once at startup.

    (Per-request ``request.app[...]`` lookups were a visible share of a
    proxied call's CPU time.) A config reload (SIGHUP) swaps ``config`` and
    ``prices`` through ``reconfigure``; a request in flight keeps the ones it
    started with where it holds them.
    """

    config: Config
    cache: ProxyCache
    usage: UsageRecorder
    upstream: UpstreamClient
    inflight: InFlight
    counters: Counters
    prices: PriceTable
    # The remote sources (DESIGN 13); None when the config names none.
    sources: Sources | None = None
    # Requests that have ended, to be settled in the next turn of the loop.
    _behind: list[Settled] = field(default_factory=list)

    def reconfigure(self, config: Config) -> None:
        """Serve the next request by ``config`` (``daemon.reload``)."""
        self.config = config
        self.prices = PriceTable(config.prices)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """One proxied request, from the checks to the audit row (after ``middleware.checked``)."""
        started = time.perf_counter()
        # A connection of `vaultd serve` numbers its arrivals (http.connections).
        notes = notes_of(request)
        self.cache.refresh_for(None if notes is None else notes.head_arrival)
        request_id = request[REQUEST_ID]
        attempt = Attempt()
        try:
            try:
                outgoing = self.admit(request, attempt)
            except Pending as pending:
                # A remote secret to read (or a first listing) first: wait for
                # it, then every check again, now without waiting.
                assert self.sources is not None  # only the catalog raises it
                await self.sources.settle(pending)
                outgoing = self.admit(request, attempt, wait=False)
            reads = needs_body(request, outgoing, attempt)
            if reads is not None:
                outgoing = await inspected(request, outgoing, attempt, self.config, reads)
            # Last: every other refusal leaves the counters as they were.
            assert attempt.session is not None
            assert attempt.credential is not None
            attempt.ticket = self.counters.admit(
                attempt.session,
                attempt.credential,
                in_flight=self.inflight.count(outgoing.session_id),
            )
            try:
                # A free slot is taken without an await (the usual case).
                if not self.inflight.try_enter(outgoing.session_id, outgoing.host):
                    await self.inflight.enter(outgoing.session_id, outgoing.host)
            except BaseException:
                # It never left: its place in the limits is given back.
                if attempt.ticket is not None:
                    self.counters.refund(attempt.ticket)
                raise
            try:
                return await self._send(request, request_id, outgoing, attempt)
            finally:
                self.inflight.leave(outgoing.session_id, outgoing.host)
        except VaultdError as exc:
            attempt.status = exc.status
            if not attempt.forwarded:
                attempt.refusal = exc.audit_reason if isinstance(exc, LimitExceeded) else exc.slug
            raise
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client's connection is lost.
            attempt.status = CLIENT_CLOSED
            raise
        finally:
            # Only requests with a valid session are audited: without one,
            # any local process could push the real rows out past
            # [audit] max_rows. (Refusals before that are in the daemon's
            # log, as failed requests.)
            if attempt.session is not None:
                settled = (request, request_id, attempt, time.perf_counter() - started)
                if attempt.budget:
                    # Now: the session's or credential's next request is
                    # admitted against what this one cost.
                    self._record(settled)
                else:
                    self._behind.append(settled)
                    if len(self._behind) == 1:
                        asyncio.get_running_loop().call_soon(self.settle_behind)

    def admit(self, request: web.Request, attempt: Attempt, *, wait: bool = True) -> Outgoing:
        """Every refusal, before any byte goes upstream; else what to send.

        ``catalog.Pending`` (``wait`` only): a remote source must answer first.
        """
        config = self.config
        cache = self.cache
        if request.method in REFUSED_METHODS:
            raise MethodNotAllowed(
                f"the proxy does not forward {request.method}", allowed=ALLOWED_METHODS
            )
        service_name, attempt.rest = split_proxy_target(request.raw_path)
        session = attempt.session = authenticate(cache, request)
        service = attempt.service = config.services.get(service_name)
        if service is None:
            raise NotFound(f"there is no service {service_name!r}; see GET /api/services")
        authorise(session, service)
        raw_query = request.rel_url.raw_query_string
        url = upstream_url(service, attempt.rest, raw_query)  # checks the path
        policy = session.policy
        if policy is not None:
            rest = route(policy, request.method, attempt.rest, raw_query, request.headers.keys())
            if rest != attempt.rest:
                attempt.rest = rest
                url = upstream_url(service, rest, raw_query)
        credential = attempt.credential = pick_credential(
            cache, service, request.headers.get(CREDENTIAL_HEADER), policy, wait=wait
        )
        secret = cache.secret(credential, service, wait=wait)
        length = request.content_length
        if length is not None and length > config.max_request_body:
            raise _too_large(config)
        attempt.path = upstream_path(attempt.rest)
        attempt.billing = billing(service.usage, request.method, attempt.path)
        attempt.budget = needs_metering(session.limits, credential.limits)
        if attempt.budget and attempt.billing is Billing.UNSEEN:
            raise Unmeterable(
                "this session or its credential has a token or cost limit, and vaultd "
                f"cannot count what this request costs ({service.name}'s usage is "
                f"{service.usage!r}; under a budget it forwards only requests whose "
                "answers report their usage, and those that cost nothing)"
            )
        attempt.secret = secret
        # tuple.__new__, as NamedTuple._make does: Outgoing's own __new__ is a
        # Python function, one call more for every request.
        return _new_tuple(
            Outgoing,
            (
                with_query_secret(url, service, secret.value),
                outgoing_headers(request.headers, service, secret.value),
                _limited(request, attempt, config) if request.body_exists else None,
                secret,
                session.id,
                (url.raw_host, url.port),  # aiohttp's pool is per host and port
            ),
        )

    async def _send(
        self, request: web.Request, request_id: str, outgoing: Outgoing, attempt: Attempt
    ) -> web.StreamResponse:
        try:
            service = attempt.service
            assert service is not None  # admitted
            attempt.forwarded = True
            try:
                # The client's send called here, not from a coroutine of ours
                # around it: one level of coroutine less for every request.
                upstream = await self.upstream.send(
                    request.method, outgoing.url, outgoing.headers, outgoing.body
                )
            except PayloadTooLarge:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._upstream_failed(exc) from None
            async with upstream:
                attempt.upstream_status = upstream.status
                response, attempt.received, attempt.status = await relay_answer(
                    request, request_id, upstream, outgoing.secret.patterns, attempt
                )
            return response
        except VaultdError:
            # A body cut off at the limit, or stalled, surfaces from the
            # client library as a broken upstream connection; the client
            # should hear why.
            if attempt.stalled:
                raise _stalled(self.config) from None
            if attempt.sent[0] > self.config.max_request_body:
                raise _too_large(self.config) from None
            raise

    def _upstream_failed(self, exc: BaseException) -> VaultdError:
        """The problem for the client library's failure to send or to read the answer's head."""
        if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamTimeout(
                f"the upstream did not answer within {self.config.read_timeout}s"
            )
        # OSError: what ClientSession.request would have wrapped in a
        # ClientOSError; a socket error is the upstream's, not a 500.
        return UpstreamUnreachable(f"the upstream could not be reached ({exc.__class__.__name__})")

    def settle_behind(self) -> None:
        """Settle the requests put behind since the last call (``serve``).

        A request without a token or cost budget is read, charged and
        audited once per turn of the event loop, with every other that ended
        in that turn, rather than as its handler ends: its limits do not
        depend on its cost (``max_requests`` and ``rpm`` count it at
        admission), and under load, one pass over many answers runs warm
        where each handler ran the same code cold (about 12 us of CPU per
        metered answer that way, in bench/proxy_bench.py). The usage
        writer calls this before each flush too (``UsageRecorder``), so a
        flush, the last one at shutdown included, writes every answer
        that has ended.
        """
        behind, self._behind = self._behind, []
        for settled in behind:
            try:
                self._record(settled)
            except Exception as exc:
                # One request's bug must not cost the others their rows. The
                # class only (a message could hold anything the request held),
                # and the request id, which vaultd made.
                log.error(
                    "could not settle a proxied request: %s request=%s",
                    exc.__class__.__name__,
                    settled[1],
                )

    def _record(self, settled: Settled) -> None:
        """Charge a request that has ended to the counters, and record its audit row."""
        request, request_id, attempt, elapsed = settled
        cost = settle(attempt, self.counters, self.prices)
        self.usage.record(audit_row(request, request_id, attempt, elapsed, cost))
