"""What an answer costs a session's and a credential's counters (DESIGN 10).

The usual case is exact: the answer said what it used (a complete
``Reading``), priced by the price table. But an answer can end without its
usage: the client left mid-stream (vaultd then stops reading), the usage
event was too large to read, the stream broke. The provider bills it all the
same. Under a token or cost budget such an answer is charged an estimate,
on the high side, rather than nothing (which would make leaving early a way
around the budget): a token for every 4 bytes sent and received, priced as
the model the answer or the request named. The audit row keeps only what the
answer itself reported (and says when that was partial).

Pure arithmetic: no I/O, no aiohttp.
"""

from __future__ import annotations

from typing import NamedTuple

from vaultd.prices import PriceTable
from vaultd.proxy.metering import Billing, Reading

# Bytes per token of the estimate: fewer than any tokenizer averages for
# text, and SSE and JSON framing add bytes that are no tokens at all.
BYTES_PER_TOKEN = 4


class Charge(NamedTuple):
    tokens: int
    cost_usd: float | None  # what the counters are charged (None: no price known)
    reported_cost_usd: float | None  # what the audit row says the answer cost


class Answer(NamedTuple):
    """What is known of one forwarded request when its answer is done."""

    service: str
    billing: Billing
    budget: bool  # the session or credential has a token or cost limit
    upstream_status: int | None  # None: no answer head came
    sent: int
    received: int
    request_model: str | None


def charge(answer: Answer, reading: Reading | None, prices: PriceTable) -> Charge:
    """What ``answer`` costs the counters: its reading, or under a budget an estimate
    when that is more. (Without a budget ``reported`` alone gives the same.)"""
    tokens, cost = reported(answer.service, reading, prices)
    if not answer.budget or not _estimated(answer, reading):  # budget first: no call
        return Charge(tokens, cost, cost)
    est_in = -(-answer.sent // BYTES_PER_TOKEN)
    est_out = -(-answer.received // BYTES_PER_TOKEN)
    if est_in + est_out <= tokens:
        return Charge(tokens, cost, cost)
    model = reading.model if reading is not None and reading.model else answer.request_model
    est_cost = prices.cost(
        answer.service,
        model,
        input_tokens=est_in,
        output_tokens=est_out,
        cached_input_tokens=0,
        cache_write_tokens=0,
    )
    if est_cost is None or (cost is not None and cost > est_cost):
        est_cost = cost
    return Charge(est_in + est_out, est_cost, cost)


def reported(service: str, reading: Reading | None, prices: PriceTable) -> tuple[int, float | None]:
    """The tokens and cost (None: no price known) the answer itself reported."""
    if reading is None:
        return 0, None
    # Unpacked, and priced by the Price itself: a Reading's counts are ints
    # from 0 already (readers), which PriceTable.cost would check again for
    # every metered answer.
    model, inputs, outputs, cached, written, _ = reading
    tokens = inputs + outputs
    if tokens == 0:
        return 0, 0.0  # nothing used costs nothing, whatever the model (an error answer)
    price = prices.price(service, model)
    return tokens, None if price is None else price.cost(inputs, outputs, cached, written)


def _estimated(answer: Answer, reading: Reading | None) -> bool:
    """Whether the answer must be charged more than it reported: under a budget, a
    billed answer (2xx, of an endpoint that reports usage) whose usage was not read whole."""
    return (
        answer.budget
        and answer.billing is Billing.REPORTED
        and answer.upstream_status is not None
        and 200 <= answer.upstream_status < 300
        and (reading is None or not reading.complete)
    )
