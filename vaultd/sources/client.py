"""One request to a source's HTTP API, and nothing it was not asked for.

The KV v2 API is called directly with aiohttp on a session of its own,
made for talking to a server that holds secrets (a maintained client such
as hvac is synchronous, follows redirects by default and reads the
environment's proxies and ``VAULT_*`` variables; none of which we want):

- ``trust_env=False``: no ``HTTPS_PROXY`` or ``.netrc`` decides where the token goes;
- redirects are never followed: a 3xx is an error, and the token in its
  header never reaches the ``Location`` (aiohttp would send it along);
- no cookies are kept; TLS is always verified (``ca_file`` adds a CA);
- an answer is read to at most ``MAX_ANSWER`` bytes and a deadline.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass

import aiohttp

from vaultd.sourceconfig import SourceSettings

# A KV answer holds one secret (16 KiB at most) and its metadata; a listing
# at most kv.MAX_KEYS names. Anything longer is not an answer vaultd uses.
MAX_ANSWER = 1024 * 1024
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
TOKEN_HEADER = "X-Vault-Token"  # noqa: S105 - a header's name


class SourceDown(Exception):
    """The server did not answer usably: unreachable, timed out, redirected, or
    an answer too large or not JSON. The message is one line with no value in it."""


class TooLarge(SourceDown):
    """An answer longer than ``MAX_ANSWER``: for a secret, one vaultd will not use."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: object


def ssl_context(settings: SourceSettings) -> ssl.SSLContext | None:
    """The system's CAs, plus ``ca_file``'s; None for plain http to loopback."""
    if not settings.url.startswith("https://"):
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise SourceDown(
            f"ca_file {settings.ca_file} cannot be used: {exc.__class__.__name__}"
        ) from None
    return context


class SourceClient:
    """Requests to one source; ``close`` when done."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.settings) or False, limit=8),
                timeout=aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT),
                headers={"X-Vault-Request": "true"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        payload: dict[str, object] | None = None,
    ) -> Answer:
        """``method path`` (``/v1/...``, built from checked segments) with ``token``."""
        headers = {TOKEN_HEADER: token} if token is not None else {}
        url = self.settings.url + path
        try:
            async with self._open().request(
                method, url, headers=headers, json=payload, allow_redirects=False
            ) as response:
                if 300 <= response.status < 400:
                    raise SourceDown(
                        f"the source answered a redirect ({response.status}), which vaultd "
                        "never follows: check its url"
                    )
                raw = await _bounded(response)
                status = response.status
        except SourceDown:
            raise
        except TimeoutError:
            raise SourceDown(f"the source did not answer within {TOTAL_TIMEOUT:.0f}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # aiohttp's messages name the host and port at most, never a header.
            raise SourceDown(
                f"the source could not be reached ({exc.__class__.__name__})"
            ) from None
        if not raw:
            return Answer(status, None)
        try:
            return Answer(status, json.loads(raw))
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." a megabyte deep
            raise SourceDown(f"the source answered {status} with a body that is not JSON") from None


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None and length > MAX_ANSWER:
        raise TooLarge(f"the source's answer is larger than {MAX_ANSWER // 1024} KiB")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.read(64 * 1024)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise TooLarge(f"the source's answer is larger than {MAX_ANSWER // 1024} KiB")
        parts.append(chunk)
