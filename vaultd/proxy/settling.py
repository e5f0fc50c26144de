"""A request that has ended, settled: its answer's usage read, its limits charged (DESIGN 10).

``Forwarder`` settles each authenticated request once, however it ended
(answered, refused, cancelled): a request under a token or cost budget as
its handler ends, any other with the rest of its turn of the event loop
(``Forwarder.settle_behind``). What it reported goes to its audit row.
"""

from __future__ import annotations

from vaultd.prices import PriceTable
from vaultd.proxy.answer import CLIENT_CLOSED, STREAM_BROKEN
from vaultd.proxy.attempt import Attempt, without_secret
from vaultd.proxy.charging import Answer, charge, reported
from vaultd.proxy.counters import Counters
from vaultd.proxy.metering import read_json_answer
from vaultd.proxy.streamusage import model_hint


def settle(attempt: Attempt, counters: Counters, prices: PriceTable) -> float | None:
    """Charge the request to the counters; the cost its answer reported (None: unknown).

    Runs however the request ended, cancelled too: what the meter saw of
    an answer the client left counts as far as it goes (and more, under a
    budget: ``charging``). A request that never left is given back.
    """
    ticket = attempt.ticket
    if ticket is not None and not attempt.forwarded:
        counters.refund(ticket)  # refused before it left: not counted
        return None
    service = attempt.service
    if service is None:
        return None
    meter = attempt.meter
    body = attempt.answer
    status = attempt.upstream_status
    patterns = None if attempt.secret is None else attempt.secret.patterns
    if meter is not None:
        complete = attempt.status not in (CLIENT_CLOSED, STREAM_BROKEN)
        attempt.reading = without_secret(meter.result(complete), patterns)
    elif status is not None and service.usage != "none":
        # No meter: a JSON answer that came whole (whole, whatever the client
        # did after: the upstream bills all of it), or one refused or broken
        # off on its head (not an HTTP status, compressed), read as a meter
        # reads an empty body: an error status is a zero reading.
        complete = body is not None or attempt.status not in (CLIENT_CLOSED, STREAM_BROKEN)
        hint = model_hint(service, attempt.path)
        reading = read_json_answer(service.usage, status, body, complete, hint)
        attempt.reading = without_secret(reading, patterns)
        attempt.answer = None  # read: up to MAX_JSON bytes need not outlive this
    if not attempt.budget:
        # Nothing to estimate without a budget (``charging.charge``): what the
        # answer reported, without the Answer that an estimate needs.
        tokens, cost = reported(service.name, attempt.reading, prices)
        if ticket is not None:
            counters.charge(ticket, tokens, cost)
        return cost
    answer = Answer(
        service.name,
        attempt.billing,
        attempt.budget,
        attempt.upstream_status,
        attempt.sent[0],
        attempt.received,
        attempt.request_model,
    )
    charged = charge(answer, attempt.reading, prices)
    if ticket is not None:
        counters.charge(ticket, charged.tokens, charged.cost_usd)
    return charged.reported_cost_usd
