"""What one proxied request has come to so far, what is sent upstream, and its audit row.

``forward.Forwarder`` fills an ``Attempt`` in as the request passes each
step; however the request ends (answered, refused, cancelled), its audit
row is made from it (``audit_row``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from vaultd.core.sessions import Session
from vaultd.models import Credential
from vaultd.proxy.cache import Secret
from vaultd.proxy.counters import Ticket
from vaultd.proxy.metering import Billing, Meter, Reading
from vaultd.proxy.redact import Patterns
from vaultd.services import Service
from vaultd.store.audit import AuditRow, audit_path


class Attempt:
    """What one request has come to so far: the audit row is made of it, however it ends."""

    __slots__ = (
        "answer",
        "billing",
        "budget",
        "credential",
        "forwarded",
        "injected",
        "meter",
        "path",
        "reading",
        "received",
        "refusal",
        "request_model",
        "rest",
        "secret",
        "sent",
        "service",
        "session",
        "stalled",
        "status",
        "ticket",
        "upstream_status",
    )

    def __init__(self) -> None:
        self.session: Session | None = None
        self.service: Service | None = None
        self.credential: Credential | None = None
        self.rest = ""
        # ``rest`` as the upstream reads it (decisions.upstream_path), once admitted.
        self.path = ""
        self.status = 500
        # A list, so that the body generator (``_limited``) can count into it.
        self.sent = [0]
        self.received = 0
        # Set when the client's body stalled past body_timeout (a 408).
        self.stalled = False
        # Its place in the limits' counters, once admitted (proxy.counters).
        self.ticket: Ticket | None = None
        # Whether anything was sent upstream; if not, why vaultd refused it.
        self.forwarded = False
        self.refusal: str | None = None
        # vaultd added stream_options.include_usage (its chunk is removed again).
        self.injected = False
        # What the answer said it used (None: not metered), read by ``meter``.
        self.reading: Reading | None = None
        self.meter: Meter | None = None
        # A JSON answer's body that came whole, as the upstream sent it: read
        # when the request is settled (``settling.settle``), not by a meter.
        self.answer: bytes | None = None
        self.secret: Secret | None = None
        self.upstream_status: int | None = None
        # Under a token or cost budget (the session's or the credential's), and
        # how the request's endpoint is billed (metering.endpoints).
        self.budget = False
        self.billing = Billing.UNSEEN
        # The model the request body names, where vaultd read it.
        self.request_model: str | None = None


class Outgoing(NamedTuple):
    """What ``admit`` decided to send upstream (a tuple: made for every request)."""

    url: URL
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes] | None
    secret: Secret
    # Who holds the request in flight, and where (proxy.inflight).
    session_id: str
    host: tuple[str | None, int | None]


def without_secret(reading: Reading | None, patterns: Patterns | None) -> Reading | None:
    """``reading`` without a model name that holds the key (``patterns``: its forms),
    as an upstream echoing it there would have it.

    The meter reads the answer before redaction; what it keeps goes to the
    audit log, which read-scoped tokens can list.
    """
    if reading is None or patterns is None:
        return reading
    model = reading.model
    if model is None:
        return reading
    if model.isascii() and len(model) < patterns.shortest:
        # Too short to hold any form of the key (ASCII: a character is a byte),
        # the usual case: no encoding, no search.
        return reading
    if patterns.found_in(model.encode("utf-8", "surrogateescape")):
        return reading._replace(model=None)
    return reading


def audit_row(
    request: web.Request, request_id: str, attempt: Attempt, elapsed: float, cost: float | None
) -> AuditRow:
    """The audit row of ``attempt`` (``elapsed``: seconds from its start to its answer's
    end), in ``store.audit.ROW_FIELDS`` order (see there why a tuple)."""
    credential, service, reading = attempt.credential, attempt.service, attempt.reading
    assert attempt.session is not None  # only authenticated attempts are audited
    return (
        int(time.time()),
        request_id,
        attempt.session.id,
        credential.id if credential else None,
        # A configured name, never what the client typed for an unknown
        # one (which could be anything, its token too).
        service.name if service is not None else "?",
        request.method[:16],
        audit_path(attempt.rest),
        attempt.status,
        round(elapsed * 1000, 3),
        attempt.sent[0],
        attempt.received,
        reading.model if reading is not None else None,
        reading.input_tokens if reading is not None else None,
        reading.output_tokens if reading is not None else None,
        reading.cached_input_tokens if reading is not None else None,
        cost,
        attempt.refusal,
        None if reading is None else int(not reading.complete),
    )
