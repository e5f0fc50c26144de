"""Usage summed from the audit log (DESIGN 10): requests, tokens and cost per group.

The rules, the same for ``GET /api/usage`` and ``vaultd usage``:

- Only requests that went upstream count (``refusal IS NULL``): a request
  vaultd refused (a limit, a forbidden service, a body too large) used nothing
  and cost nothing, and counting it would let a flood of refusals look like use.
- A request is unmetered when its answer gave no token counts
  (``input_tokens IS NULL``): a service with ``usage = "none"``, or an answer
  with no usage in it. It counts in ``requests`` and in ``unmetered_requests``.
- Sums skip nulls; a group with nothing metered sums to 0.
- A metered request whose model has no price (``cost_usd IS NULL`` with
  tokens counted) counts in ``unpriced_requests``: its cost is not in
  ``cost_usd``, so that sum is a lower bound whenever this is not 0.
- ``key`` is null for rows with no session, credential or model (a request
  that failed before a credential was chosen, an unmetered answer).
- Days are UTC dates (``YYYY-MM-DD``) of ``at``.
- ``since`` is inclusive and ``until`` exclusive, so that back-to-back
  windows neither overlap nor leave a gap.
- At most ``MAX_GROUPS`` groups: by day the newest days, otherwise the largest
  by cost, then by requests. The audit log itself is bounded ([audit]
  max_rows and max_age), so these are sums over what it still holds.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

from sqlite_utils import Database

USAGE_BY: Final = ("day", "session", "credential", "model", "service")
MAX_GROUPS: Final = 1000

# What each grouping groups by: constants only, never client text.
_KEYS: Final = {
    "day": "strftime('%Y-%m-%d', at, 'unixepoch')",
    "session": "session_id",
    "credential": "credential_id",
    "model": "model",
    "service": "service",
}
assert tuple(_KEYS) == USAGE_BY

# TOTAL(), not SUM(): SUM raises "integer overflow" past 2**63, which token
# counts from a hostile upstream or an edited file could reach, and that would
# be a 500; TOTAL is a float that never overflows (exact up to 2**53).
_SELECT: Final = """
    SELECT {key} AS key,
        count(*) AS requests,
        total(input_tokens) AS input_tokens,
        total(output_tokens) AS output_tokens,
        total(cached_input_tokens) AS cached_input_tokens,
        total(cost_usd) AS cost_usd,
        count(*) - count(input_tokens) AS unmetered_requests,
        count(input_tokens) - count(cost_usd) AS unpriced_requests
    FROM audit
    WHERE {where}
    GROUP BY 1
    ORDER BY {order}
    LIMIT {limit}
"""
# Ties broken by key, so that the same rows always list in the same order
# (NULLs first, as SQLite sorts them).
_BIGGEST_FIRST: Final = "cost_usd DESC, requests DESC, key"
_NEWEST_FIRST: Final = "key DESC"


class UsageGroup(NamedTuple):
    """One group's use; ``to_json`` is the shape of ``GET /api/usage``'s items."""

    key: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float
    unmetered_requests: int
    unpriced_requests: int

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def usage_groups(
    db: Database, *, by: str, since: int | None, until: int | None
) -> list[UsageGroup]:
    """The audit log's use grouped ``by`` one of ``USAGE_BY``, in one query."""
    key = _KEYS.get(by)
    if key is None:
        raise ValueError(f"by must be one of {', '.join(USAGE_BY)}, not {by!r}")
    clauses = ["refusal IS NULL"]
    params: list[int] = []
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("at < ?")
        params.append(until)
    sql = _SELECT.format(
        key=key,
        where=" AND ".join(clauses),
        # By day the newest days are kept when there are too many, then put
        # back in date order below.
        order=_NEWEST_FIRST if by == "day" else _BIGGEST_FIRST,
        limit=MAX_GROUPS,
    )
    groups = [_group(row) for row in db.execute(sql, params).fetchall()]
    return groups[::-1] if by == "day" else groups


def _group(row: tuple[Any, ...]) -> UsageGroup:
    key, requests, input_tokens, output_tokens, cached, cost, unmetered, unpriced = row
    return UsageGroup(
        # The file is input too: a key column edited to a number reads as text.
        key=None if key is None else str(key),
        requests=requests,
        input_tokens=int(_finite(input_tokens)),
        output_tokens=int(_finite(output_tokens)),
        cached_input_tokens=int(_finite(cached)),
        # Rounded to a millionth of a dollar: sums of floats grow noise digits.
        cost_usd=round(_finite(cost), 6),
        unmetered_requests=unmetered,
        unpriced_requests=max(unpriced, 0),
    )


def _finite(total: float) -> float:
    # An infinity (or the NaN of +inf plus -inf) can only come from an edited
    # file: it reads as 0, never as a crash or as JSON's invalid "Infinity".
    return total if math.isfinite(total) else 0.0
