"""Asking an OpenAI-shaped stream for its usage, before the request goes upstream (DESIGN 10).

A streamed chat completion reports the tokens it used only when its request
says ``stream_options.include_usage``; without it the answer cannot be
metered. So for metered services vaultd reads such a request's body (up to
``[policy] max_inspect_body``, by ``inspection``) and adds the option where
the client did not (``metering.request``); the meter then removes what the
option adds to the answer, and the client sees the stream it asked for.

A body that cannot be read for this is forwarded untouched and counted
unmetered, except under a token or cost budget, which an unmetered answer
would escape: there it is refused (403 unmeterable) before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from vaultd.config import Config
from vaultd.proxy.errors import Unmeterable
from vaultd.proxy.metering import add_stream_usage, responses_background
from vaultd.services import Service

if TYPE_CHECKING:
    from vaultd.proxy.attempt import Attempt, Outgoing

# The OpenAI endpoints that take stream_options (chat and legacy completions),
# and the one whose background mode answers without usage.
_STREAM_USAGE_PATHS = ("/chat/completions", "/completions")
_RESPONSES_PATH = "/responses"
# Gemini names the model in the path: .../models/{model}:generateContent.
_GEMINI_MODEL = re.compile(r"/models/([^/:]{1,200}):")


def inspection(method: str, service: Service, path: str, budget: bool) -> str | None:
    """What to read the body for: "stream" (add include_usage), "background"
    (a budget must refuse a background response), or nothing. ``path``: as the
    upstream reads it (decisions.upstream_path)."""
    if service.usage != "openai" or method != "POST":
        return None
    if path.endswith(_STREAM_USAGE_PATHS):
        return "stream"
    if budget and path.endswith(_RESPONSES_PATH):
        return "background"
    return None


def model_hint(service: Service, path: str) -> str | None:
    """The model a request names in its ``path`` (Gemini), for answers that do not say."""
    if service.usage != "gemini":
        return None
    match = _GEMINI_MODEL.search(path)
    return match.group(1) if match else None


def with_stream_usage(
    what: str,
    body: bytes | None,
    outgoing: Outgoing,
    attempt: Attempt,
    config: Config,
    document: dict[str, object] | None = None,
) -> Outgoing:
    """``outgoing``, its body asking for the stream's usage where it did not.

    ``what`` is ``inspection``'s answer; ``body`` the whole request body, or
    None when it is larger than ``[policy] max_inspect_body`` (``outgoing``
    then still sends all of it). ``document``: ``body`` as a strict reader
    (every key once, no NaN) has already read it, to be read again.
    """
    budget = attempt.budget
    if body is None:
        return _uninspected(outgoing, budget, config.max_inspect_body)
    if what == "background":
        if responses_background(body):
            raise Unmeterable(
                f"{_BUDGET}, and a background response (or a body that cannot be read "
                "to tell) answers without its usage"
            )
    else:
        body = _asked_for_usage(body, attempt, config, document)
    # The body is whole: its length is known, whatever the client sent.
    outgoing.headers["Content-Length"] = str(len(body))
    return outgoing._replace(body=then(body, None))


_BUDGET = "this session or its credential has a token or cost limit"


def _asked_for_usage(
    body: bytes, attempt: Attempt, config: Config, document: dict[str, object] | None
) -> bytes:
    """The body to send: with include_usage where the stream would have gone without."""
    rewritten = add_stream_usage(body, document)
    attempt.request_model = rewritten.model
    if rewritten.unreadable:
        if attempt.budget:
            raise Unmeterable(
                f"{_BUDGET}, and this request's body cannot be read with certainty to ask "
                "the stream for its usage (a JSON object, each key once, stream a boolean, "
                "stream_options an object)"
            )
        return body
    if rewritten.body is None or not rewritten.added:
        return body
    if not config.add_stream_usage:
        if attempt.budget:
            raise Unmeterable(
                f"{_BUDGET}, and this stream does not ask for its usage "
                "(stream_options.include_usage), which [metering] add_stream_usage = false "
                "leaves to the client"
            )
        return body
    attempt.injected = True
    return rewritten.body


def _uninspected(outgoing: Outgoing, budget: bool, bound: int) -> Outgoing:
    if budget:
        raise Unmeterable(
            f"{_BUDGET}, and this request's body is larger than [policy] max_inspect_body "
            f"({bound} bytes), so vaultd cannot read it to make sure the answer reports "
            "its usage"
        )
    return outgoing


async def then(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    """``first``, then what ``rest`` still has: a body read in part, sent whole."""
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk
