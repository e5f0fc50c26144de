"""The daemon's run loop in-process: draining, start-up failures, sd_notify, the lock."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.config import write_api_config
from vaultd.config import Config
from vaultd.core.vault import init_vault
from vaultd.daemon.app import create_app
from vaultd.daemon.sdnotify import notify
from vaultd.daemon.server import RedactingFormatter, run_app
from vaultd.errors import VaultdError
from vaultd.store.daemon_lock import InstanceLock

TOKEN = "fn_sess_" + "T" * 43


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_api_config(tmp_path)


class Daemon:
    """``run_app`` as a task on port 0, with the port it got."""

    def __init__(self, app: web.Application, drain_timeout: float = 5.0) -> None:
        self.stop = asyncio.Event()
        self.ports: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(
            run_app(
                app,
                "127.0.0.1",
                0,
                self.stop,
                drain_timeout=drain_timeout,
                on_ready=self.ports.set_result,
            )
        )

    async def url(self, path: str) -> str:
        ports = await asyncio.wait_for(asyncio.shield(self.ports), timeout=10)
        return f"http://127.0.0.1:{ports[0]}{path}"

    async def finish(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout=20)


def _slow_app(config: Config, seconds: float, started: asyncio.Event) -> web.Application:
    app = create_app(config)

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(seconds)
        return web.json_response({"finished": True})

    app.router.add_get("/slow", slow)
    return app


async def test_stop_lets_requests_in_flight_finish(config: Config) -> None:
    started = asyncio.Event()
    daemon = Daemon(_slow_app(config, 0.5, started))
    url = await daemon.url("/slow")
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(url))
        await asyncio.wait_for(started.wait(), timeout=10)
        assert await daemon.finish() == 0
        response = await asyncio.wait_for(request, timeout=10)
        assert response.status == 200
        assert await response.json() == {"finished": True}
        # Stopped accepting: nothing listens there any more.
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url, timeout=aiohttp.ClientTimeout(total=5))


async def test_draining_is_bounded(config: Config) -> None:
    started = asyncio.Event()
    daemon = Daemon(_slow_app(config, 60, started), drain_timeout=0.5)
    url = await daemon.url("/slow")
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(url))
        await asyncio.wait_for(started.wait(), timeout=10)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await daemon.finish() == 0
        assert loop.time() - began < 10
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(request, timeout=10)


async def test_taken_port_is_one_line(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = await run_app(create_app(config), "127.0.0.1", port, asyncio.Event())
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        f"Error: cannot listen on 127.0.0.1:{port}: the port is already in use"
        " (is another vaultd running?)\n"
    )


async def test_wrong_key_fails_the_start(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    vault, _ = init_vault(config)
    vault.close()
    config.key_file.chmod(0o600)
    config.key_file.write_bytes(os.urandom(32))
    code = await run_app(create_app(config), "127.0.0.1", 0, asyncio.Event())
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: wrong key"), lines


async def test_fresh_machine_initialises_itself(config: Config) -> None:
    assert not config.data_dir.exists()
    daemon = Daemon(create_app(config))
    async with aiohttp.ClientSession() as session:
        response = await session.get(await daemon.url("/healthz"))
        assert response.status == 200
    assert await daemon.finish() == 0
    assert config.db_path.exists() and config.key_file.exists()
    assert config.data_dir.stat().st_mode & 0o077 == 0


async def test_non_loopback_host_warns(
    config: Config, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, nothing
    # ever listens off loopback, and the warning has been given first.
    with caplog.at_level(logging.WARNING, logger="vaultd"):
        code = await run_app(create_app(config), "192.0.2.1", 0, asyncio.Event())
    assert code == 1
    assert "NOT LOOPBACK" in caplog.text
    assert capsys.readouterr().err.startswith("Error: cannot listen on 192.0.2.1:0")


def test_notify_path_and_abstract_sockets(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    abstract = f"vaultd-test-{os.getpid()}-{id(tmp_path)}"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_name,
    ):
        by_path.bind(str(path))
        by_name.bind("\0" + abstract)
        for sock in (by_path, by_name):
            sock.settimeout(5)
        assert notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert by_path.recv(100) == b"READY=1"
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + abstract})
        assert by_name.recv(100) == b"STOPPING=1"


def test_notify_without_a_manager(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1"}) is False
    # A socket that is gone is a warning, never a failure of the daemon.
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert "could not notify" in caplog.text


def test_instance_lock(tmp_path: Path) -> None:
    first, second = InstanceLock(tmp_path), InstanceLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(VaultdError, match=rf"already serving .* \(pid {os.getpid()}\)"):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # released means free again
    second.release()
    assert (tmp_path / "serve.lock").stat().st_mode & 0o777 == 0o600


def test_formatter_cuts_tokens() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "saw %s", (TOKEN,), None)
    text = RedactingFormatter("%(message)s").format(record)
    assert TOKEN not in text
    assert text.startswith("saw fn_sess_TTTT")


async def test_access_log_has_no_query_and_no_token(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(create_app(config))
    with caplog.at_level(logging.INFO, logger="vaultd.access"):
        async with aiohttp.ClientSession() as session:
            url = await daemon.url(f"/api/credentials/{TOKEN}?key={TOKEN}&x=%0aFAKE")
            response = await session.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status == 401
        assert await daemon.finish() == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "vaultd.access"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /api/credentials/fn_sess_TTTT[REDACTED] 401 ")
    assert TOKEN not in caplog.text and "FAKE" not in caplog.text
