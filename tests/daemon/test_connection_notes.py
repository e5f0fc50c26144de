"""What each connection of ``vaultd serve`` notes about itself (``http.connections``), on
aiohttp's public API (``daemon.connection.NumberedConnection``) and the fast server path.

The notes spare the proxy cache its database check for requests whose bytes
arrived before the last check; a wrong note would let a request sent after a
revocation through on a stale session, so the order is checked exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.http import PublicTestServer
from vaultd.daemon import connection_fast
from vaultd.daemon.connection import DaemonRunner, NumberedConnection, NumberingServer
from vaultd.http.connections import notes_of
from vaultd.proxy.arrivals import ARRIVALS


class Recording(asyncio.Protocol):
    """A stand-in for aiohttp's handler: every call, in order, and the arrival count it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append(("connection_made", transport))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data_received", (data, ARRIVALS.latest)))

    def eof_received(self) -> bool | None:
        self.calls.append(("eof_received", None))
        return True

    def pause_writing(self) -> None:
        self.calls.append(("pause_writing", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume_writing", None))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("connection_lost", exc))


def test_a_numbered_connection_passes_every_call_on_and_numbers_bytes_first() -> None:
    handler = Recording()
    connection = NumberedConnection(handler)
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 3978)
    lost = ConnectionResetError("gone")

    connection.connection_made(transport)
    connection.data_received(b"GET / HTTP/1.1\r\n")
    first = connection.head_arrival
    connection.data_received(b"Host: localhost\r\n\r\n")
    assert connection.eof_received() is True
    connection.pause_writing()
    connection.resume_writing()
    connection.connection_lost(lost)

    assert connection.listening_port == 3978
    assert first is not None and connection.head_arrival == first + 1
    # Numbered before aiohttp saw the bytes: a check that read a number this
    # large ran after they had arrived.
    assert handler.calls == [
        ("connection_made", transport),
        ("data_received", (b"GET / HTTP/1.1\r\n", first)),
        ("data_received", (b"Host: localhost\r\n\r\n", first + 1)),
        ("eof_received", None),
        ("pause_writing", None),
        ("resume_writing", None),
        ("connection_lost", lost),
    ]


@asynccontextmanager
async def made_by(runner: DaemonRunner) -> AsyncIterator[tuple[Any, NumberedConnection]]:
    """``runner`` set up: its server as a site reads it, and a connection it made."""
    await runner.setup()
    try:
        server: Any = runner.server  # typed as aiohttp's Server, which it stands in for
        assert isinstance(server, NumberingServer)
        connection = server()
        assert isinstance(connection, NumberedConnection)
        yield server, connection
    finally:
        await runner.cleanup()


async def test_the_public_runner_makes_numbered_connections() -> None:
    async with made_by(DaemonRunner(web.Application())) as (server, made):
        assert isinstance(made.handler, web.RequestHandler)
        # Anything else asked of it is the real server's (aiohttp's test
        # server reads it as ``handler``, for one).
        assert server.requests_count == 0


@pytest.mark.skipif(
    connection_fast.internals_missing() is not None, reason="the fast server path is off"
)
async def test_the_fast_connection_numbers_every_read() -> None:
    """The fast path's handler is behind the same notes, and every read is numbered, not
    only one that ends a head: aiohttp parses some bytes later than it reads them
    (those held back while an Upgrade request is handled), and a request made of them
    must carry the number of the read that brought them."""
    async with made_by(connection_fast.FastDaemonRunner(web.Application())) as (_, connection):
        assert isinstance(connection.handler, connection_fast.ProblemRequestHandler)
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            ("127.0.0.1", 3978) if name == "sockname" else default
        )
        connection.connection_made(transport)
        connection.data_received(b"GET /x HTTP/1.1\r\nHo")  # a head not ended yet
        first = connection.head_arrival
        assert first is not None and first == ARRIVALS.latest
        connection.data_received(b"st: localhost\r\n\r\n")
        assert connection.head_arrival == first + 1 == ARRIVALS.latest
        assert connection.listening_port == 3978
        connection.connection_lost(None)


async def test_a_request_on_the_public_path_finds_its_connections_notes(
    aiohttp_client: Any,
) -> None:
    seen: list[tuple[int | None, int | None, int]] = []

    async def note(request: web.Request) -> web.Response:
        notes = notes_of(request)
        assert notes is not None
        seen.append((notes.listening_port, notes.head_arrival, ARRIVALS.latest))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/note", note)
    client: TestClient[Any, Any] = await aiohttp_client(PublicTestServer(app))
    for _ in range(2):  # one keep-alive connection, two requests
        async with client.get("/note") as resp:
            assert resp.status == 200
    port = client.server.port
    assert [listening for listening, _, _ in seen] == [port, port]
    first, second = (arrival for _, arrival, _ in seen)
    assert first is not None and second is not None and first < second
    # Each request's number is of bytes that had arrived when it was handled.
    assert all(arrival is not None and arrival <= latest for _, arrival, latest in seen)


async def test_a_connection_without_notes_is_none(aiohttp_client: Any) -> None:
    async def note(request: web.Request) -> web.Response:
        return web.Response(text=repr(notes_of(request)))

    app = web.Application()
    app.router.add_get("/note", note)
    client: TestClient[Any, Any] = await aiohttp_client(app)  # aiohttp's own runner
    async with client.get("/note") as resp:
        assert await resp.text() == "None"
