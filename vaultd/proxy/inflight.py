"""Bounds on what proxied requests in flight may hold (issue: a starved pool).

A token's holder could open many requests that promise a body and never send
it, each holding one of the upstream host's pooled connections, until every
other client's call to that host hangs. Three bounds keep that from
happening, each a problem response, never a hang:

- a session holds at most ``[proxy] max_session_concurrency`` requests in
  flight (429 beyond);
- a request waits at most ``[proxy] pool_timeout`` for one of its host's
  connections (503), counted here so that the wait is ours to bound;
- a request body may stall at most ``[proxy] body_timeout`` (408, in
  ``forward``).

Pure bookkeeping on the event loop: no I/O, no aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from vaultd.errors import VaultdError

# aiohttp's TCPConnector(limit_per_host=...) in proxy.routes: the same number.
CONNECTIONS_PER_HOST = 128


class TooManyInFlight(VaultdError):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests in flight"


class PoolBusy(VaultdError):
    status = 503
    slug = "upstream-pool-busy"
    title = "All connections to the upstream are busy"


class InFlight:
    """Requests in flight per session, and a wait-bounded slot per upstream host."""

    __slots__ = ("_hosts", "_per_session", "_pool_timeout", "_sessions")

    def __init__(self, *, per_session: int, pool_timeout: float) -> None:
        self._per_session = per_session
        self._pool_timeout = pool_timeout
        self._sessions: dict[str, int] = {}
        self._hosts: dict[Hashable, asyncio.Semaphore] = {}

    async def enter(self, session_id: str, host: Hashable) -> None:
        """Count one request of ``session_id`` to ``host`` in; ``leave`` after it, always.

        (Two calls rather than a context manager: this runs for every
        proxied request, and a generator-based one costs several times more.)
        """
        sessions = self._sessions
        count = sessions.get(session_id, 0)
        if count >= self._per_session:
            raise TooManyInFlight(
                f"this session already has {count} requests in flight "
                f"(at most [proxy] max_session_concurrency = {self._per_session})"
            )
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = asyncio.Semaphore(CONNECTIONS_PER_HOST)
        sessions[session_id] = count + 1
        try:
            if not slots.locked():
                await slots.acquire()  # a slot is free: no wait
                return
            async with asyncio.timeout(self._pool_timeout):
                await slots.acquire()
        except BaseException as exc:
            self._leave_session(session_id)  # no slot was taken: ``leave`` is not owed
            if isinstance(exc, TimeoutError):
                raise PoolBusy(
                    f"all {CONNECTIONS_PER_HOST} connections to the upstream were busy for "
                    f"{self._pool_timeout:g}s ([proxy] pool_timeout); try again"
                ) from None
            raise

    def count(self, session_id: str) -> int:
        """The session's requests in flight now (its ``concurrency`` limit's count)."""
        return self._sessions.get(session_id, 0)

    def total(self) -> int:
        """Every session's requests in flight now (those waiting for a connection too)."""
        return sum(self._sessions.values())

    def leave(self, session_id: str, host: Hashable) -> None:
        self._hosts[host].release()
        self._leave_session(session_id)

    def _leave_session(self, session_id: str) -> None:
        left = self._sessions[session_id] - 1
        if left:
            self._sessions[session_id] = left
        else:
            del self._sessions[session_id]
