"""What each session and credential has used, live, for the limits (DESIGN 10).

The daemon is the only process that proxies, so it holds the authoritative
counts in memory: a session's lifetime use, a credential's use per UTC day,
and the times of a session's requests in the last minute when it has an
``rpm`` limit. The usage writer writes the counts behind, as absolute
values, in the transaction of each flush (``snapshot`` / ``written``), so
a hard crash loses at most one flush interval, as it does audit rows.

A request is counted when it is admitted (before it goes upstream), so that
requests arriving together cannot all pass the last free place; its tokens
and cost are added when its answer has been read. Pure bookkeeping on the
event loop: no aiohttp; the database is read only through the loaders the
proxy passes in, once per session or credential-day.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaultd.core.limits import (
    COST_CEILING,
    COUNT_CEILING,
    DAY,
    RPM_WINDOW,
    Refusal,
    concurrency_refusal,
    daily_refusal,
    lifetime_refusal,
    rpm_refusal,
    utc_day,
)
from vaultd.core.sessions import Session, Used
from vaultd.models import Credential
from vaultd.proxy.errors import LimitExceeded

# session id -> what that session used, as stored.
SessionLoader = Callable[[str], Used]
# (credential id, UTC day) -> what that credential used that day, as stored.
DayLoader = Callable[[str, int], Used]
# (session id, since) -> times of that session's forwarded requests since then.
RecentLoader = Callable[[str, float], list[float]]


@dataclass(slots=True)
class _Count:
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    # The values last written to the database: unchanged since, an entry can
    # be forgotten and read back from there.
    written: tuple[int, int, float] = (0, 0, 0.0)
    window: deque[float] | None = None
    # Admitted requests not yet charged or refunded, and when the last came:
    # an entry is forgotten only when nothing is owed on it and it is idle.
    open: int = 0
    last: float = 0.0

    def values(self) -> tuple[int, int, float]:
        return (self.requests, self.tokens, self.cost_usd)

    def used(self) -> Used:
        return Used(self.requests, self.tokens, self.cost_usd)


@dataclass(slots=True)
class Ticket:
    """One admitted request's place in the counters: charged, or refunded, once."""

    session: _Count
    credential: _Count | None
    at: float
    open: bool = True


@dataclass(slots=True)
class Snapshot:
    """Counts changed since they were last written: what the usage writer writes."""

    sessions: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    days: dict[tuple[str, int], tuple[int, int, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.days)


class Counters:
    def __init__(
        self,
        load_session: SessionLoader,
        load_day: DayLoader,
        load_recent: RecentLoader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load_session = load_session
        self._load_day = load_day
        self._load_recent = load_recent
        self._clock = clock
        self._sessions: dict[str, _Count] = {}
        self._days: dict[tuple[str, int], _Count] = {}

    # -- the proxy's calls --------------------------------------------------

    def admit(self, session: Session, credential: Credential, *, in_flight: int) -> Ticket:
        """Count one request in, or raise ``LimitExceeded`` (counting nothing).

        ``in_flight``: the session's requests in flight now.
        """
        at = self._clock()
        limits = session.limits
        # The dictionaries first (int(at // DAY) is utc_day(at), without its
        # call): a count not there yet is read from the database.
        count = self._sessions.get(session.id) or self._session_count(session)
        day = self._days.get((credential.id, int(at // DAY))) or self._day_count(credential, at)
        if limits is None or "rpm" not in limits:
            count.window = None  # no rpm limit (any more): no window to keep
        if limits is not None:
            refusal = lifetime_refusal(limits, count.used())
            if refusal is None and "concurrency" in limits:
                refusal = concurrency_refusal(int(limits["concurrency"]), in_flight)
            if refusal is None and "rpm" in limits:
                refusal = self._rpm(session, count, int(limits["rpm"]), at)
            _refuse(refusal)
        if credential.limits is not None:
            _refuse(daily_refusal(credential.limits, day.used(), at))
        for counted in (count, day):
            counted.requests += 1
            counted.open += 1
            counted.last = at
        if count.window is not None:
            count.window.append(at)
        return Ticket(count, day, at)

    def refund(self, ticket: Ticket) -> None:
        """Take back an admitted request that never left (no pool slot, say)."""
        if not ticket.open:
            return
        ticket.open = False
        for count in (ticket.session, ticket.credential):
            if count is not None:
                count.requests -= 1
                count.open -= 1
        window = ticket.session.window
        if window is not None and ticket.at in window:
            window.remove(ticket.at)

    def charge(self, ticket: Ticket, tokens: int, cost_usd: float | None) -> None:
        """Add an answer's tokens and cost to what its request was counted in."""
        if not ticket.open:
            return
        ticket.open = False
        # Conditional expressions, not min(): this runs for every answer.
        for count in (ticket.session, ticket.credential):
            if count is not None:
                count.open -= 1
                if tokens:
                    total = count.tokens + tokens
                    count.tokens = total if total < COUNT_CEILING else COUNT_CEILING
                if cost_usd is not None:
                    usd = count.cost_usd + cost_usd
                    count.cost_usd = usd if usd < COST_CEILING else COST_CEILING

    def session_used(self, session_id: str) -> Used | None:
        """What the session has used, if it was counted since the daemon started."""
        count = self._sessions.get(session_id)
        return None if count is None else count.used()

    def credential_used_today(self, credential_id: str) -> Used | None:
        count = self._days.get((credential_id, utc_day(self._clock())))
        return None if count is None else count.used()

    # -- the usage writer's calls -------------------------------------------

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for session_id, count in self._sessions.items():
            if count.values() != count.written:
                snap.sessions[session_id] = count.values()
        for key, count in self._days.items():
            if count.values() != count.written:
                snap.days[key] = count.values()
        return snap

    def written(self, snap: Snapshot) -> None:
        """``snap`` is committed: remember it, and forget entries nothing more is owed on.

        Forgotten entries are read back from the database when next needed,
        which now holds exactly their counts; an entry with an rpm window is
        kept while its window holds a request.
        """
        for session_id, values in snap.sessions.items():
            count = self._sessions.get(session_id)
            if count is not None:
                count.written = values
        for key, values in snap.days.items():
            day_count = self._days.get(key)
            if day_count is not None:
                day_count.written = values
        at = self._clock()
        _forget_idle(self._sessions, at)
        _forget_idle(self._days, at)

    # -- inside ------------------------------------------------------------

    def _session_count(self, session: Session) -> _Count:
        count = self._sessions.get(session.id)
        if count is None:
            # From the database, not the cached row: only this process writes
            # these columns, and what it wrote last is what is there.
            used = self._load_session(session.id)
            values = (used.requests, used.tokens, used.cost_usd)
            count = self._sessions[session.id] = _Count(*values, written=values)
        return count

    def _day_count(self, credential: Credential, at: float) -> _Count:
        key = (credential.id, utc_day(at))
        count = self._days.get(key)
        if count is None:
            used = self._load_day(*key)
            values = (used.requests, used.tokens, used.cost_usd)
            count = self._days[key] = _Count(*values, written=values)
        return count

    def _rpm(self, session: Session, count: _Count, rpm: int, at: float) -> Refusal | None:
        window = count.window
        if window is None:
            # First request under an rpm limit since the daemon started (or
            # since the limit was set): the last minute's forwarded requests
            # are in the audit log.
            window = count.window = deque(sorted(self._load_recent(session.id, at - RPM_WINDOW)))
        while window and window[0] <= at - RPM_WINDOW:
            window.popleft()
        # Only the newest rpm matter; more can be there after a limit was lowered.
        while len(window) > rpm:
            window.popleft()
        return rpm_refusal(rpm, window, at)


def _forget_idle(entries: dict[Any, _Count], at: float) -> None:
    """Drop entries that are written, owe nothing and saw no request for a minute.

    Memory then holds only what was used lately; an rpm window is empty by then.
    """
    idle = [
        key
        for key, count in entries.items()
        if count.open == 0 and count.last <= at - RPM_WINDOW and count.values() == count.written
    ]
    for key in idle:
        del entries[key]


def _refuse(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise LimitExceeded(refusal)
