"""Whether a request would exceed a limit (DESIGN 10): counts in, a refusal or nothing out.

Pure decisions: the counters themselves are kept by the proxy
(``proxy.counters``), which calls these before any byte goes upstream. A
counter at or over its maximum refuses; tokens and cost are known only
after an answer, so only requests already in flight can overshoot them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from vaultd.core.sessions import Used
from vaultd.models import Limits
from vaultd.store import counts

DAY = 86_400
RPM_WINDOW = 60.0
# The limits that only an answer's usage can count, a session's and a
# credential's: a request whose cost vaultd cannot see cannot be held to them
# (403 unmeterable).
METERED_LIMITS = ("max_tokens", "max_cost_usd", "max_tokens_per_day", "max_cost_usd_per_day")
# Counts stop growing at what a stored count can be (store.counts), so a
# hostile upstream's huge counts cannot overflow what the usage writer stores.
COUNT_CEILING = counts.MAX_COUNT
COST_CEILING = counts.MAX_COST


class Refusal(NamedTuple):
    """Which limit a request would exceed, its maximum, what was used, and when to retry."""

    limit: str
    maximum: int | float
    used: int | float
    # Seconds until the window ends; None when it never does (a lifetime budget).
    retry_after: int | None


def utc_day(at: float) -> int:
    """Days since 1970-01-01 in UTC: the day a credential's daily limits count in."""
    return int(at // DAY)


def needs_metering(*limits: Limits | None) -> bool:
    """Whether any of these limits (a session's, its credential's) counts tokens or cost."""
    # Loops, not any() over generators: this runs for every proxied request,
    # and most have no limits at all.
    for found in limits:
        if found:
            for name in METERED_LIMITS:
                if name in found:
                    return True
    return False


def lifetime_refusal(limits: Limits, used: Used) -> Refusal | None:
    """A session's ``max_requests``, ``max_tokens`` and ``max_cost_usd``."""
    for name, count in (
        ("max_requests", used.requests),
        ("max_tokens", used.tokens),
        ("max_cost_usd", used.cost_usd),
    ):
        maximum = limits.get(name)
        if maximum is not None and count >= maximum:
            return Refusal(f"session.{name}", maximum, _shown(count), None)
    return None


def daily_refusal(limits: Limits, used: Used, at: float) -> Refusal | None:
    """A credential's ``max_*_per_day``, counted in the UTC day of ``at``."""
    for name, count in (
        ("max_requests_per_day", used.requests),
        ("max_tokens_per_day", used.tokens),
        ("max_cost_usd_per_day", used.cost_usd),
    ):
        maximum = limits.get(name)
        if maximum is not None and count >= maximum:
            next_day = (utc_day(at) + 1) * DAY
            return Refusal(f"credential.{name}", maximum, _shown(count), _seconds(next_day - at))
    return None


def rpm_refusal(rpm: int, window: Sequence[float], at: float) -> Refusal | None:
    """``rpm``: at most that many requests in any 60 s; ``window`` holds the times of
    the requests of the last 60 s, oldest first."""
    if len(window) < rpm:
        return None
    # The request that frees a place is the rpm-th newest: once it is 60 s
    # old, fewer than rpm remain in the window.
    frees_at = window[len(window) - rpm] + RPM_WINDOW
    return Refusal("session.rpm", rpm, len(window), _seconds(frees_at - at))


def concurrency_refusal(concurrency: int, in_flight: int) -> Refusal | None:
    if in_flight < concurrency:
        return None
    # No window: a request in flight ends when it ends; one second is a
    # polite guess that SDKs honour.
    return Refusal("session.concurrency", concurrency, in_flight, 1)


def _seconds(delta: float) -> int:
    """Whole seconds to wait, never 0 (a Retry-After of 0 invites a busy loop)."""
    return max(1, math.ceil(delta))


def _shown(count: int | float) -> int | float:
    return round(count, 6) if isinstance(count, float) else count
