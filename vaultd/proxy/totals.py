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
    """Counts since start, keyed by plain tuples (read at scrape time, never reset)."""

    __slots__ = ("cost_usd", "refusals", "requests", "tokens")

    def __init__(self) -> None:
        # (service, status) -> requests audited
        self.requests: dict[tuple[str, int], int] = {}
        # (service, reason, limit) -> refused requests; limit "" unless limit-exceeded
        self.refusals: dict[tuple[str, str, str], int] = {}
        # (service, kind) -> tokens, kind "input", "output" or "cached_input"
        self.tokens: dict[tuple[str, str], int] = {}
        # service -> USD of the answers that had a price
        self.cost_usd: dict[str, float] = {}

    def count(self, row: AuditRow) -> None:
        service = row[_SERVICE]
        key = (service, row[_STATUS])
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        refusal = row[_REFUSAL]
        if refusal is not None:
            self._refused(service, refusal)
        if row[_INPUT] is not None or row[_OUTPUT] is not None:
            self._metered(row)

    def _refused(self, service: str, refusal: str) -> None:
        # "limit-exceeded session.rpm": the slug, and the limit (a fixed set of names).
        reason, _, limit = refusal.partition(" ")
        key = (service, reason, limit)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def _metered(self, row: AuditRow) -> None:
        service = row[_SERVICE]
        tokens = self.tokens
        # Unrolled: this runs for every metered answer.
        value = row[_INPUT]
        if value:
            key = (service, "input")
            tokens[key] = tokens.get(key, 0) + value
        value = row[_OUTPUT]
        if value:
            key = (service, "output")
            tokens[key] = tokens.get(key, 0) + value
        value = row[_CACHED]
        if value:
            key = (service, "cached_input")
            tokens[key] = tokens.get(key, 0) + value
        cost = row[_COST]
        if cost is not None:
            costs = self.cost_usd
            costs[service] = costs.get(service, 0.0) + cost


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
