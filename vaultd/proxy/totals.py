"""What the proxy has done since the daemon started, for ``GET /metrics`` (DESIGN 14).

Counted from each audit row as the usage writer receives it
(``UsageRecorder.record``), so the totals are exactly what the audit log
gains: requests by service and status, refusals by reason, tokens and cost
by service. A few dict increments per request on the event loop; nothing is
written anywhere, and a restart starts from zero (as Prometheus counters
may). Keys are configured service names, status codes and problem slugs:
never a token, a secret or anything a client typed.
"""

from __future__ import annotations

from typing import Final

from vaultd.store.audit import ROW_FIELDS, AuditRow

# Where an AuditRow holds what is counted here (store.audit.ROW_FIELDS order;
# literals so that mypy knows each field's type; the check below keeps them true).
_SERVICE: Final = 4
_STATUS: Final = 7
_INPUT: Final = 12
_OUTPUT: Final = 13
_CACHED: Final = 14
_COST: Final = 15
_REFUSAL: Final = 16


class Totals:
    """Counts since start, read at scrape time, never reset."""

    __slots__ = ("_tokens", "cost_usd", "refusals", "requests")

    def __init__(self) -> None:
        # (service, status) -> requests audited
        self.requests: dict[tuple[str, int], int] = {}
        # (service, reason, limit) -> refused requests; limit "" unless limit-exceeded
        self.refusals: dict[tuple[str, str, str], int] = {}
        # service -> [input, output, cached_input] tokens: a list added to in
        # place, where (service, kind) keys made three tuples per metered answer.
        self._tokens: dict[str, list[int]] = {}
        # service -> USD of the answers that had a price
        self.cost_usd: dict[str, float] = {}

    @property
    def tokens(self) -> dict[tuple[str, str], int]:
        """(service, kind) -> tokens, kind "input", "output" or "cached_input"; a
        kind appears once some answer reported more than none of it."""
        return {
            (service, kind): n
            for service, sums in self._tokens.items()
            for kind, n in zip(_KINDS, sums, strict=True)
            if n
        }

    def count(self, row: AuditRow) -> None:
        service = row[_SERVICE]
        key = (service, row[_STATUS])
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        refusal = row[_REFUSAL]
        if refusal is not None:
            self._refused(service, refusal)
        inputs, outputs = row[_INPUT], row[_OUTPUT]
        if inputs is None and outputs is None:
            return  # not metered
        # Inline, not a method of its own: this runs for every metered answer.
        sums = self._tokens.get(service)
        if sums is None:
            sums = self._tokens[service] = [0, 0, 0]
        if inputs:
            sums[0] += inputs
        if outputs:
            sums[1] += outputs
        cached = row[_CACHED]
        if cached:
            sums[2] += cached
        cost = row[_COST]
        if cost is not None:
            costs = self.cost_usd
            costs[service] = costs.get(service, 0.0) + cost

    def _refused(self, service: str, refusal: str) -> None:
        # "limit-exceeded session.rpm": the slug, and the limit (a fixed set of names).
        reason, _, limit = refusal.partition(" ")
        key = (service, reason, limit)
        self.refusals[key] = self.refusals.get(key, 0) + 1


_KINDS = ("input", "output", "cached_input")


def _check_positions() -> None:
    expected = {
        _SERVICE: "service",
        _STATUS: "status",
        _INPUT: "input_tokens",
        _OUTPUT: "output_tokens",
        _CACHED: "cached_input_tokens",
        _COST: "cost_usd",
        _REFUSAL: "refusal",
    }
    for index, name in expected.items():
        if ROW_FIELDS[index] != name:
            raise AssertionError(f"AuditRow field {index} is {ROW_FIELDS[index]}, not {name}")


_check_positions()
