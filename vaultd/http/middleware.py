"""What every request passes through: a request id, errors rendered as problems, standard headers.

``checked`` is the whole sequence: the request id first, so that a refusal by
the guard (or anything after it) is a problem carrying the request id like
every other error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import traceback

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, istr

from vaultd.errors import VaultdError
from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.errors import InternalError, VaultUnavailable
from vaultd.http.guard import Guard
from vaultd.http.problems import SERVER_SIDE, from_http_exception, problem_response
from vaultd.models import format_uuid
from vaultd.tokens import redact, redact_path

log = logging.getLogger("vaultd.http")

_REQUEST_ID_HEADER = istr("X-Request-Id")

# Request ids: see ``new_request_id``. They are no secret and grant nothing,
# so a seeded Mersenne Twister is random enough, at a fraction of the cost.
_rid_random = random.Random(os.urandom(32))  # noqa: S311
_RID_VERSION_VARIANT = 0x7 << 76 | 0x2 << 62  # UUID version 7, RFC 9562 variant
_RID_RANDOM_BITS = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)


def new_request_id() -> str:
    """A request id: a UUIDv7 (milliseconds, then 74 random bits).

    Not ``models.uuid7``: record ids need its order within a millisecond and
    its lock and system randomness; a request id is made for every request
    and needs neither, only to be unique and to sort by time.
    """
    return format_uuid(
        (time.time_ns() // 1_000_000) << 80
        | (_rid_random.getrandbits(80) & _RID_RANDOM_BITS)
        | _RID_VERSION_VARIANT
    )


def _log_unexpected(request: web.Request, exc: BaseException, request_id: str) -> None:
    # Frames only: the exception's message and the locals could hold a secret
    # or a token, the code locations cannot.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unexpected %s in %s %s (request %s)\n%s",
        type(exc).__name__,
        request.method,
        redact_path(request.rel_url.raw_path),
        request_id,
        frames,
    )


def render_error(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    """The problem response for ``exc``, logging what the operator needs to know."""
    if isinstance(exc, web.HTTPException):
        return problem_response(from_http_exception(exc), request_id, request.raw_path)
    if isinstance(exc, SERVER_SIDE):
        # Logged in full (paths are the operator's business), answered generically.
        log.error(
            "vault error in %s %s (request %s): %s",
            request.method,
            redact_path(request.rel_url.raw_path),
            request_id,
            redact(str(exc)),
        )
        return problem_response(
            VaultUnavailable("the vault cannot be used right now; see the daemon's log"),
            request_id,
            request.raw_path,
        )
    if isinstance(exc, VaultdError):
        return problem_response(exc, request_id, request.raw_path)
    _log_unexpected(request, exc, request_id)
    return problem_response(
        InternalError(f"unexpected error; the daemon's log has request {request_id}"),
        request_id,
        request.raw_path,
    )


def problem_for(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    """The problem response for ``exc`` raised while serving ``request``.

    Re-raises ``exc`` where no problem may be sent: a deliberate redirect or
    204 raised as an exception, or an error after part of a streamed body is
    on the wire (no other response can follow, so aiohttp drops the connection).
    """
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # a deliberate redirect or 204, not an error
        return render_error(request, exc, request_id)
    writer = request.writer
    if writer is not None and writer.output_size > 0:
        raise exc
    return render_error(request, exc, request_id)


async def checked(request: web.Request, guard: Guard, handler: Handler) -> web.StreamResponse:
    """What every request passes: a request id, ``guard``, then ``handler``; errors as problems.

    The app's one middleware (``chain.standard_chain``) and the proxy's
    direct path (``proxy.direct``) both serve through this, so the two ways a
    request is served cannot drift apart.
    """
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    try:
        refused = guard.refusal(request)
        if refused is not None:
            return refused
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return problem_for(request, exc, request_id)


# DESIGN 15: what every response under /ui/ carries, its errors included, on
# top of nosniff and no-store (every response's: add_standard_headers). The
# page's data comes from local clients (names, metadata, paths): the CSP lets
# only the daemon's own files run and load, whatever a bug let into the DOM.
PAGE_PREFIX = "/ui"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'none'",
    "Referrer-Policy": "no-referrer",
}


async def standard_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: headers every response carries, streamed ones too,
    and the page's own on every answer under ``/ui`` (``PAGE_HEADERS``)."""
    ensure_standard_headers(response, request.get(REQUEST_ID) or new_request_id())
    # The decoded path, as the router matches it: /%75i/ is the page too.
    if request.path.startswith(PAGE_PREFIX):
        response.headers.update(PAGE_HEADERS)


def ensure_standard_headers(response: web.StreamResponse, request_id: str) -> None:
    """``set_standard_headers``, unless the proxy's relay has set them already.

    Only ``add_standard_headers`` writes this request's id, and the relay
    calls it on headers whose CORS fields it dropped (``decisions.
    response_headers``): such an answer is done, and a proxied call is spared
    doing it all again.
    """
    if response.headers.get(_REQUEST_ID_HEADER) != request_id:
        set_standard_headers(response, request_id)


def add_standard_headers(headers: CIMultiDict[str], request_id: str) -> None:
    """The headers every response carries, replacing any of the same name."""
    headers[_REQUEST_ID_HEADER] = request_id
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    # aiohttp's default names itself and its version; say no more than needed.
    headers["Server"] = "vaultd"


def set_standard_headers(response: web.StreamResponse, request_id: str) -> None:
    add_standard_headers(response.headers, request_id)
    # T3: no CORS, ever, whatever a handler set.
    for name in [h for h in response.headers if h.lower().startswith("access-control-")]:
        del response.headers[name]
