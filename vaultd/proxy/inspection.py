"""Reading a request's body before it goes upstream, when a decision needs it.

Two decisions read the body, and share one read of it, bounded by ``[policy]
max_inspect_body``: the session policy's model rules (DESIGN 11: the model a
JSON body names), and metering's stream usage (DESIGN 10: ask an OpenAI
stream to report its usage). Most requests need neither, and are not read
here: their body streams upstream as it arrives. A body that was read is
sent as it was read (with the stream option added, where metering adds it).
"""

from __future__ import annotations

from aiohttp import web

from vaultd.config import Config
from vaultd.proxy.attempt import Attempt, Outgoing
from vaultd.proxy.policy import body_model
from vaultd.proxy.streamusage import inspection, then, with_stream_usage


def needs_body(request: web.Request, outgoing: Outgoing, attempt: Attempt) -> str | None:
    """Why ``inspected`` must read this request's body ("model", "stream",
    "background"; the model first), or None: no read, the body streams."""
    if outgoing.body is None:
        return None
    session, service = attempt.session, attempt.service
    assert session is not None
    assert service is not None
    policy = session.policy
    if policy is not None and policy.models and not attempt.model_in_path:
        return "model"
    return inspection(request.method, service, attempt.path, attempt.budget)


async def inspected(
    request: web.Request, outgoing: Outgoing, attempt: Attempt, config: Config
) -> Outgoing:
    """``outgoing`` once the decisions that read its body allow it (else they raise)."""
    session, service = attempt.session, attempt.service
    assert session is not None
    assert service is not None
    body, outgoing = await _read(request, outgoing, config.max_inspect_body)
    policy = session.policy
    if policy is not None and policy.models and not attempt.model_in_path:
        attempt.request_model = body_model(
            policy,
            body,
            request.headers.get("Content-Type"),
            request.headers.get("Content-Encoding"),
        )
    what = inspection(request.method, service, attempt.path, attempt.budget)
    if what is not None:
        return with_stream_usage(what, body, outgoing, attempt, config)
    return outgoing


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
    async for chunk in outgoing.body:
        head.append(chunk)
        size += len(chunk)
        if size > bound:
            return None, outgoing._replace(body=then(b"".join(head), outgoing.body))
    body = b"".join(head)
    # Whole: its length is known, whatever the client sent (chunked, say).
    outgoing.headers["Content-Length"] = str(len(body))
    return body, outgoing._replace(body=then(body, None))
