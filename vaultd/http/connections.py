"""What a connection of ``vaultd serve`` notes about itself, for the requests it carries.

Two things are cheaper known per connection than asked per request:

- ``listening_port``: the port the connection came in on, for the Host check
  (``guard.check_host``); asking the transport per request showed in the
  proxy's profile;
- ``head_arrival``: a number from ``proxy.arrivals.ARRIVALS`` taken when the
  connection's latest bytes were read, so at or after the current request's
  head arrived. The proxy cache skips its database check for a request whose
  number is no later than the last check's (``ProxyCache.refresh_for``):
  that check already saw every commit made before the request was sent.

``daemon.connection``'s ``NumberedConnection`` notes them, in front of
aiohttp's handler (or the fast server path's), on aiohttp's public API: it
is the protocol the transport calls, so the transport finds it. A connection
that notes nothing (an aiohttp server other than the daemon's, as some tests
run) gives None, and its requests are checked in full: it fails safe.
"""

from __future__ import annotations

from aiohttp.web_request import BaseRequest


class ConnectionNotes:
    """What a connection notes: set by the connection, read through ``notes_of``."""

    __slots__ = ()
    listening_port: int | None
    head_arrival: int | None


def notes_of(request: BaseRequest) -> ConnectionNotes | None:
    """The notes of the connection ``request`` came on, or None if it keeps none."""
    transport = request.transport
    if transport is None:  # the client has gone
        return None
    protocol = transport.get_protocol()
    return protocol if isinstance(protocol, ConnectionNotes) else None
