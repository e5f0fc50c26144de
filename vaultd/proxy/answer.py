"""Passing the upstream's answer back to the client: headers filtered, body redacted, streamed.

DESIGN 6 steps 6 and 7. An answer whose body arrived whole with its head (the
usual small JSON answer; aiohttp's flow control bounds what it buffers) goes
out in one write with its length; anything else streams chunk by chunk
through the redactor, never buffered whole.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from vaultd.http.middleware import add_standard_headers
from vaultd.proxy.attempt import Attempt
from vaultd.proxy.decisions import response_headers, unscannable_coding
from vaultd.proxy.errors import UpstreamEncoding, UpstreamInvalid, UpstreamUnreachable
from vaultd.proxy.metering import Meter, is_json_answer
from vaultd.proxy.metering.meter import MAX_JSON
from vaultd.proxy.redact import Patterns
from vaultd.proxy.streamusage import model_hint

log = logging.getLogger("vaultd.proxy")

# Audit statuses for what no HTTP status says once the upstream's went out:
# the client left mid-answer (nginx's 499), or the upstream broke off (502).
CLIENT_CLOSED = 499
STREAM_BROKEN = 502
# Statuses whose answers have no body (RFC 9110 6.4.1): nothing there to redact.
_BODILESS = frozenset({204, 304})


async def relay_answer(
    request: web.Request,
    request_id: str,
    upstream: aiohttp.ClientResponse,
    patterns: Patterns,
    attempt: Attempt,
) -> tuple[web.StreamResponse, int, int]:
    """Pass the upstream's answer on, redacted: (response, bytes received, audit status).

    Where ``attempt``'s service reports usage, the body is metered as it
    passes (DESIGN 10), before redaction: a JSON body that came whole is kept
    as ``attempt.answer``, to be read once the request is settled; any other
    body goes through ``attempt.meter``,
    and what that removes (the usage-only chunk vaultd asked for) never
    reaches the client.
    """
    # A HEAD answer, or a 204/304, has no body to redact: its Content-Length
    # (and its Content-Encoding) stay true.
    if not 100 <= upstream.status <= 599:
        # RFC 9110 15: three digits, 1xx to 5xx. aiohttp's parser takes any
        # three digits, and a client handed status 0 or 99 may misread it.
        raise UpstreamInvalid(
            f"the upstream answered with status {upstream.status}, which is not an HTTP status"
        )
    bodiless = request.method == "HEAD" or upstream.status in _BODILESS
    if not bodiless:
        _refuse_unscannable(upstream)
    reason = upstream.reason
    if reason:
        # aiohttp decoded the phrase as UTF-8 with surrogateescape: encoded
        # the same way it is the bytes the upstream sent, which is what the
        # forms are (a length in characters is not one in bytes).
        raw = reason.encode("utf-8", "surrogateescape")
        if len(raw) >= patterns.shortest and patterns.found_in(raw):
            # "401 Invalid key sk-...": the status line is echo space too.
            reason = None  # aiohttp then sends the standard phrase
    headers = response_headers(
        upstream.raw_headers, body_may_change=not bodiless, patterns=patterns
    )
    # Set here, not only by the app's on_response_prepare signal: the direct
    # path (proxy.direct) has no signal to run.
    add_standard_headers(headers, request_id)
    if not bodiless and upstream.content.is_eof():
        return await _relay_whole(request, upstream, patterns, reason, headers, attempt)
    response = web.StreamResponse(status=upstream.status, reason=reason, headers=headers)
    return await _relay_stream(request, response, upstream, patterns, _meter(attempt, upstream))


def _meter(attempt: Attempt, upstream: aiohttp.ClientResponse) -> Meter | None:
    """A meter for the answer's body (``attempt.meter``), unless its service reports no usage."""
    service = attempt.service
    if service is None or service.usage == "none":
        return None
    # Positional: a class called with keywords has them packed into a dict
    # for __init__.
    meter = attempt.meter = Meter(
        service.usage,
        upstream.status,
        upstream.headers.get("Content-Type"),
        attempt.injected,  # strip_usage_chunk
        model_hint(service, attempt.path),
    )
    return meter


def _refuse_unscannable(upstream: aiohttp.ClientResponse) -> None:
    """Refuse, never pass unchecked, a body compressed in a way redaction cannot read.

    vaultd asked for identity, so only a misbehaving upstream gets here;
    decompressing to scan would break DESIGN 6.4 (bytes as sent) and invite
    zip bombs, and passing it through would hand an echoed key to the client.
    The problem names the header, never its value: that is the upstream's
    text, and it could be the key it was sent.
    """
    headers = upstream.headers
    if hdrs.CONTENT_ENCODING not in headers and hdrs.TRANSFER_ENCODING not in headers:
        return  # the usual JSON answer: nothing to look into
    coding = unscannable_coding(
        headers.getall(hdrs.CONTENT_ENCODING, ()), headers.getall(hdrs.TRANSFER_ENCODING, ())
    )
    if coding is not None:
        raise UpstreamEncoding(
            f"the upstream's answer has a {coding} other than identity although vaultd "
            "asked for identity; a compressed answer cannot be checked for the key, "
            "so it is not passed on"
        )


async def _relay_whole(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    patterns: Patterns,
    reason: str | None,
    headers: CIMultiDict[str],
    attempt: Attempt,
) -> tuple[web.StreamResponse, int, int]:
    """A body that came whole with the head, out in one write with its length.

    The usual small JSON answer (aiohttp's flow control bounds what it
    buffers): redacted at once, it takes one write where streaming it takes
    three (head, chunk, end) and their system calls. A JSON body needs no
    Meter: it is kept (``attempt.answer``) and read when the request is settled.
    """
    try:
        body = upstream.content.read_nowait()
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"the upstream's answer broke off ({exc.__class__.__name__})"
        ) from None
    received = len(body)
    answered = body  # as the upstream sent it: what the usage is read from
    service = attempt.service
    kind = "none" if service is None else service.usage
    whole_json = (
        kind != "none"
        and is_json_answer(kind, upstream.headers.get("Content-Type"))
        and received <= MAX_JSON
    )
    if kind != "none" and not whole_json:
        meter = _meter(attempt, upstream)
        assert meter is not None
        body = meter.whole(body)  # an event stream, say: its usage chunk may go
    if patterns.found_in(body):
        body = patterns.sub(body)
    status = upstream.status
    whole = web.Response(status=status, reason=reason, headers=headers, body=body)
    try:
        await whole.prepare(request)
        await whole.write_eof()
    except ConnectionResetError:
        status = CLIENT_CLOSED
    finally:
        # Also when the client left or the handler was cancelled: the answer
        # came whole from the upstream, which bills all of it.
        if whole_json:
            attempt.answer = answered
    return whole, received, status


async def _relay_stream(
    request: web.Request,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    patterns: Patterns,
    meter: Meter | None,
) -> tuple[web.StreamResponse, int, int]:
    """The body chunk by chunk as it arrives, through the redactor, never held whole."""
    redactor = patterns.redactor()
    received = 0
    status = response.status
    try:
        try:
            await response.prepare(request)
        except ConnectionResetError:
            raise _ClientGone from None
        async for chunk in upstream.content.iter_any():
            received += len(chunk)
            out = redactor.feed(chunk if meter is None else meter.feed(chunk))
            if out:
                await _send(response, out)
        held = b"" if meter is None else meter.flush()
        tail = redactor.feed(held) + redactor.flush() if held else redactor.flush()
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
