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
import contextlib
from collections import deque
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


class _Host:
    """One upstream host's connections in use, and the requests waiting for one (FIFO)."""

    __slots__ = ("busy", "waiting")

    def __init__(self) -> None:
        self.busy = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class InFlight:
    """Requests in flight per session, and a wait-bounded slot per upstream host.

    The slots are counted here rather than by an ``asyncio.Semaphore``: a free
    slot is taken without an ``await`` (``try_enter``), where the semaphore's
    ``acquire`` is a coroutine and its ``locked`` a generator, about a dozen
    Python calls per proxied request in all. Only a request that must wait
    makes a future, and a slot given back goes straight to the first waiter.
    """

    __slots__ = ("_hosts", "_per_session", "_pool_timeout", "_sessions")

    def __init__(self, *, per_session: int, pool_timeout: float) -> None:
        self._per_session = per_session
        self._pool_timeout = pool_timeout
        self._sessions: dict[str, int] = {}
        self._hosts: dict[Hashable, _Host] = {}

    def try_enter(self, session_id: str, host: Hashable) -> bool:
        """Count one request of ``session_id`` to ``host`` in if a slot is free now
        (``leave`` after it, always); False when it must wait (``enter``).

        Raises ``TooManyInFlight`` when the session holds its maximum already.
        """
        count = self._session_count(session_id)
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = _Host()
        if slots.busy < CONNECTIONS_PER_HOST and not slots.waiting:
            slots.busy += 1
            self._sessions[session_id] = count + 1
            return True
        return False

    async def enter(self, session_id: str, host: Hashable) -> None:
        """``try_enter``, else wait at most ``pool_timeout`` for a slot (``PoolBusy``)."""
        if self.try_enter(session_id, host):
            return
        slots = self._hosts[host]
        self._sessions[session_id] = self._session_count(session_id) + 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiting.append(turn)
        try:
            async with asyncio.timeout(self._pool_timeout):
                await turn
        except BaseException as exc:
            self._leave_session(session_id)  # no slot was taken: ``leave`` is not owed
            if turn.done() and not turn.cancelled():
                # Handed a slot just as it gave up (timed out, or cancelled):
                # the slot goes on to the next in line, never lost.
                self._free(slots)
            else:
                turn.cancel()
                # A cancellation cancels ``turn`` at once, and a ``leave`` that
                # ran before this line got to run has dropped it from the queue.
                with contextlib.suppress(ValueError):
                    slots.waiting.remove(turn)
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

    def busy(self, host: Hashable) -> int:
        """The slots of ``host`` in use now."""
        slots = self._hosts.get(host)
        return 0 if slots is None else slots.busy

    def leave(self, session_id: str, host: Hashable) -> None:
        self._free(self._hosts[host])
        self._leave_session(session_id)

    def _session_count(self, session_id: str) -> int:
        count = self._sessions.get(session_id, 0)
        if count >= self._per_session:
            raise TooManyInFlight(
                f"this session already has {count} requests in flight "
                f"(at most [proxy] max_session_concurrency = {self._per_session})"
            )
        return count

    @staticmethod
    def _free(slots: _Host) -> None:
        waiting = slots.waiting
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to it: ``busy`` stays
                return
        slots.busy -= 1

    def _leave_session(self, session_id: str) -> None:
        left = self._sessions[session_id] - 1
        if left:
            self._sessions[session_id] = left
        else:
            del self._sessions[session_id]
