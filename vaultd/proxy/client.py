"""Sending a proxied request upstream through aiohttp's public client API.

``UpstreamClient.send`` is ``ClientSession.request`` with every option a
proxy must decide set, so that nothing but what ``decisions.outgoing_headers``
chose reaches the upstream:

- no cookies are kept or sent (``DummyCookieJar``): one upstream's cookies
  must never ride along on another session's request;
- no ``HTTP(S)_PROXY`` or netrc from the environment (``trust_env=False``):
  nothing may route keys through a host the user did not configure;
- redirects are not followed: the client decides, and a redirect to another
  host must not carry the key there;
- answers are passed on as the upstream sent them, never decompressed
  (vaultd asks for identity and refuses anything else:
  ``proxy.answer``);
- aiohttp's automatic headers (``Accept: */*``, its ``Accept-Encoding``,
  ``User-Agent: Python/3.x aiohttp/3.x``, a default ``Content-Type:
  application/octet-stream``) are skipped: they would tell the upstream
  things the client did not say.

aiohttp retries an idempotent request once when a pooled keep-alive
connection turns out to have been closed, and never once its body was read.
``proxy/client_fast.py`` sends the same through aiohttp's internals, faster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict
from yarl import URL

# aiohttp's own list (client.IDEMPOTENT_METHODS, less TRACE, which the proxy
# refuses): requests sent again, once, when a reused connection turns out closed.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Per read from the upstream (ClientSession's default is 256 KiB): answers are
# passed on as they come, so a larger buffer would only hold more of what a
# slow client has not read yet, per connection.
READ_BUFSIZE = 2**16
# The headers aiohttp would add by itself.
_AUTO_HEADERS = (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE)


def upstream_session(
    connector: aiohttp.BaseConnector, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """The proxy's one client session: its pool and limits; no cookies, environment or decoding.

    Every option is set here, once, rather than per request: ``request``
    merges per-request options with the session's on every call.
    """
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        skip_auto_headers=_AUTO_HEADERS,
        read_bufsize=READ_BUFSIZE,
        timeout=timeout,
    )


class UpstreamClient:
    """Sends requests with ``session`` (made by ``upstream_session``), within ``timeout``'s limits.

    ``timeout`` is the session's too; the fast client, which uses only the
    session's pool, needs it by itself.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> None:
        self._session = session
        self._timeout = timeout

    async def send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
    ) -> aiohttp.ClientResponse:
        """The upstream's answer, its head read; release it with ``async with``.

        Raises what aiohttp raises: ``aiohttp.ClientError`` subclasses,
        ``TimeoutError`` when connecting or a read takes too long, and (in
        principle) a bare ``OSError`` from the socket.
        """
        # Redirects are the one option a session cannot set for all requests.
        return await self._session.request(
            method, url, headers=headers, data=body, allow_redirects=False
        )
