"""The order in which request heads arrived, for "was this checked after the request came in?".

``vaultd serve``'s connections number their bytes as they arrive
(``http.connections``: each read, so a request carries the number of the
latest read on its connection, no earlier than its head's);
``ProxyCache.refresh_for`` then skips its database check for a request whose
number is no later than the last check's: that check already saw every
commit made before the request was sent, which is all a revocation promises
(DESIGN 6: the next request). Under load the event loop reads many heads
between two turns of the handlers, and one check now serves all of them
instead of one each.

An order, not a time: numbers are handed out on the event loop's thread, in
the order the bytes were read, so "arrived before the check" is exact.
"""

from __future__ import annotations


class ArrivalCounter:
    """A number that grows by one each time a connection reads bytes."""

    __slots__ = ("latest",)

    def __init__(self) -> None:
        self.latest = 0

    def tick(self) -> int:
        """The number of the bytes that just arrived (larger than every one before)."""
        self.latest += 1
        return self.latest


# One per process: every connection and the proxy cache of `vaultd serve`
# run on the one event loop.
ARRIVALS = ArrivalCounter()
