"""Asking an OpenAI-shaped stream for its usage, before the request goes upstream (DESIGN 10).

A streamed chat completion reports the tokens it used only when its request
says ``stream_options.include_usage``; without it the answer cannot be
metered. So for metered services vaultd reads such a request's body (up to
``[policy] max_inspect_body``) and adds the option where the client did not
(``metering.request``); the meter then removes what the option adds to the
answer, and the client sees the stream it asked for.

A body that cannot be read for this is forwarded untouched and counted
unmetered, except under a token or cost budget, which an unmetered answer
would escape: there it is refused (403 unmeterable) before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from vaultd.config import Config
from vaultd.core.limits import needs_metering
from vaultd.proxy.errors import Unmeterable
from vaultd.proxy.metering import add_stream_usage
from vaultd.services import Service

if TYPE_CHECKING:
    from vaultd.proxy.forward import Attempt, Outgoing

# The OpenAI endpoints that take stream_options (chat and legacy completions).
_STREAM_USAGE_PATHS = ("/chat/completions", "/completions")
# Gemini names the model in the path: .../models/{model}:generateContent.
_GEMINI_MODEL = re.compile(r"/models/([^/:]{1,200}):")


def _wants_stream_usage(method: str, service: Service, rest: str, config: Config) -> bool:
    if not config.add_stream_usage or service.usage != "openai" or method != "POST":
        return False
    # As the upstream reads the path: escapes decoded (the path was checked,
    # so none of them is a slash), a trailing slash ignored.
    path = "/" + unquote(rest.partition("?")[0]).rstrip("/")
    return path.endswith(_STREAM_USAGE_PATHS)


def model_hint(service: Service, rest: str) -> str | None:
    """The model a request names in its path (Gemini), for answers that do not say."""
    if service.usage != "gemini":
        return None
    match = _GEMINI_MODEL.search("/" + unquote(rest))
    return match.group(1) if match else None


async def with_stream_usage(
    request: web.Request, outgoing: Outgoing, attempt: Attempt, config: Config
) -> Outgoing:
    """``outgoing``, its body asking for the stream's usage where it did not."""
    service, session = attempt.service, attempt.session
    assert service is not None  # admitted
    assert session is not None
    if outgoing.body is None or not _wants_stream_usage(
        request.method, service, attempt.rest, config
    ):
        return outgoing
    budget = needs_metering(session.limits)
    bound = config.max_inspect_body
    length = request.content_length
    if length is not None and length > bound:
        return _uninspected(outgoing, budget, bound)
    head: list[bytes] = []
    size = 0
    async for chunk in outgoing.body:
        head.append(chunk)
        size += len(chunk)
        if size > bound:
            break
    body = b"".join(head)
    if size > bound:
        return _uninspected(outgoing._replace(body=_then(body, outgoing.body)), budget, bound)
    rewritten = add_stream_usage(body)
    if rewritten.unreadable and budget:
        raise Unmeterable(
            "this session has a token or cost budget, and this request's body cannot be "
            "read to ask the stream for its usage (it must be a JSON object, each key once)"
        )
    if rewritten.body is not None and rewritten.added:
        attempt.injected = True
        body = rewritten.body
    # The body is whole now: its length is known, whatever the client sent.
    outgoing.headers["Content-Length"] = str(len(body))
    return outgoing._replace(body=_then(body, None))


def _uninspected(outgoing: Outgoing, budget: bool, bound: int) -> Outgoing:
    if budget:
        raise Unmeterable(
            f"this session has a token or cost budget, and this request's body is larger "
            f"than [policy] max_inspect_body ({bound} bytes), so vaultd cannot ask the "
            "stream for its usage"
        )
    return outgoing


async def _then(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk
