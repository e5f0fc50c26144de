"""Reading a request's body before it goes upstream, when a decision needs it.

Two decisions read the body, and share one read of it, bounded by ``[policy]
max_inspect_body``: the session policy's model rules (DESIGN 11: the model a
JSON body names), and metering's stream usage (DESIGN 10: ask an OpenAI
stream to report its usage). Most requests need neither, and are not read
here: their body streams upstream as it arrives. A body that was read is
sent as it was read (with the stream option added, where metering adds it).
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from vaultd.config import Config
from vaultd.core.policy import Policy
from vaultd.http.errors import MalformedRequest
from vaultd.proxy.attempt import Attempt, Outgoing
from vaultd.proxy.policy import body_model
from vaultd.proxy.streamusage import inspection, then, with_stream_usage


class Reads(NamedTuple):
    """Why a request's body is read: decided once, before the read."""

    models: Policy | None  # a policy whose model rules check the body's model
    stream: str | None  # metering's reason ("stream", "background": streamusage)


def needs_body(request: web.Request, outgoing: Outgoing, attempt: Attempt) -> Reads | None:
    """What ``inspected`` must read this request's body for, or None: no read, the
    body streams upstream as it arrives."""
    if outgoing.body is None:
        return None
    session, service = attempt.session, attempt.service
    assert session is not None
    assert service is not None
    policy = session.policy
    models = policy if policy is not None and policy.models else None
    stream = inspection(request.method, service, attempt.path, attempt.budget)
    if models is None and stream is None:
        return None
    return Reads(models, stream)


async def inspected(
    request: web.Request, outgoing: Outgoing, attempt: Attempt, config: Config, reads: Reads
) -> Outgoing:
    """``outgoing`` once the decisions that read its body allow it (else they raise)."""
    body, outgoing = await _read(request, outgoing, config.max_inspect_body)
    document = None
    if reads.models is not None:
        read = body_model(
            reads.models,
            body,
            _every(request, "Content-Type"),
            _every(request, "Content-Encoding"),
        )
        attempt.request_model, document = read.model, read.document
    if reads.stream is not None:
        return with_stream_usage(reads.stream, body, outgoing, attempt, config, document)
    return outgoing


def _every(request: web.Request, name: str) -> str | None:
    """Every value of the header ``name``, joined as one (None: none sent).

    All of them, not the first: a request that sends ``Content-Encoding:
    identity`` and then ``Content-Encoding: gzip`` must not be read as
    identity here while the upstream decodes it by the second. Joined, the
    values read as no single type or coding, and the model check fails closed.
    """
    values = request.headers.getall(name, [])
    return ", ".join(values) if values else None


async def _read(
    request: web.Request, outgoing: Outgoing, bound: int
) -> tuple[bytes | None, Outgoing]:
    """The whole body (None: more than ``bound`` bytes) and ``outgoing`` sending all of it."""
    assert outgoing.body is not None  # needs_body
    length = request.content_length
    if length is not None and length > bound:
        return None, outgoing  # not a byte read: refused or streamed as it comes
    head: list[bytes] = []
    size = 0
    try:
        async for chunk in outgoing.body:
            head.append(chunk)
            size += len(chunk)
            if size > bound:
                return None, outgoing._replace(body=then(b"".join(head), outgoing.body))
    except web.RequestPayloadError:
        # A body whose framing breaks as it arrives (a bad chunk size; and a
        # Content-Encoding it does not have, where a server decodes bodies:
        # vaultd's does not, see DaemonRunner) is the client's mistake: a
        # 400, not the 500 an unexpected exception becomes. Nothing has gone
        # upstream.
        raise MalformedRequest(
            "the request body could not be read as its headers describe it "
            "(its Content-Encoding or chunked framing)"
        ) from None
    body = b"".join(head)
    # Whole: its length is known, whatever the client sent (chunked, say).
    outgoing.headers["Content-Length"] = str(len(body))
    return body, outgoing._replace(body=then(body, None))
