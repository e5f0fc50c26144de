"""``vaultd serve`` as a real process: start, serve, revoke from the CLI, SIGTERM.

Each daemon runs on a free loopback port with HOME and the XDG directories
under tmp_path; every wait is a bounded loop or has a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonEnv, stop
from vaultd.config import load_config
from vaultd.core.vault import open_vault


@pytest.fixture
def env(tmp_path: Path) -> DaemonEnv:
    return DaemonEnv(tmp_path)


@pytest.fixture
def daemon(env: DaemonEnv) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    proc, log = env.start()
    try:
        env.wait_healthy(proc, log)
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_request_revoke_and_sigterm(env: DaemonEnv, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(20)
        proc, log = env.start(NOTIFY_SOCKET=str(notify_path))
        try:
            # A fresh machine: the first serve initialised the vault itself.
            assert notify.recv(4096).startswith(b"READY=1\n")
            env.wait_healthy(proc, log)
            config = load_config(env=env.vars)
            with open_vault(config) as vault:
                session, token = vault.sessions.create(
                    name="t",
                    scopes=["admin"],
                    services=["*"],
                    ttl=600,
                    known_services=config.services,
                )
            assert env.request("GET", "/api/credentials", token) == (200, [])
            status, created = env.request(
                "POST",
                "/api/credentials",
                token,
                {"service": "openai", "name": "main", "secret": "sk-subprocess-secret-000000"},
            )
            assert status == 201 and created["name"] == "main"
            status, body = env.request("GET", "/api/credentials")
            assert status == 401 and body["error"] == body["detail"]

            # Revoked by another process (the CLI): the very next request fails.
            revoked = env.vaultd("session", "revoke", session.id)
            assert revoked.returncode == 0, revoked.stderr
            status, body = env.request("GET", "/api/credentials", token)
            assert (status, body["detail"]) == (401, "the token is revoked")

            assert stop(proc) == 0
            assert notify.recv(4096) == b"STOPPING=1"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    stderr = log.read_text()
    assert "listening on http://127.0.0.1:" in stderr and "stopped" in stderr
    assert token not in stderr and "sk-subprocess-secret" not in stderr
    assert "Traceback" not in stderr


def test_sigint_also_exits_cleanly(
    env: DaemonEnv, daemon: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, _ = daemon
    assert stop(proc, signal.SIGINT) == 0


def test_second_instance_is_one_line(
    env: DaemonEnv, daemon: tuple[subprocess.Popen[bytes], Path]
) -> None:
    second, log = env.start("second")
    assert second.wait(timeout=60) == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: another vaultd is already serving")
    # The first one is unharmed.
    assert env.request("GET", "/healthz")[0] == 200
    assert stop(daemon[0]) == 0


def test_taken_port_is_one_line(env: DaemonEnv) -> None:
    assert env.vaultd("init").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", env.port))
        taken.listen()
        proc, log = env.start()
        assert proc.wait(timeout=60) == 1
    lines = log.read_text().splitlines()
    assert lines == [
        f"Error: cannot listen on 127.0.0.1:{env.port}: the port is already in use"
        " (is another vaultd running?)"
    ]


def test_a_wrong_fast_paths_setting_is_one_line(env: DaemonEnv) -> None:
    assert env.vaultd("init").returncode == 0
    proc, log = env.start(VAULTD_FAST_PATHS="turbo")
    assert proc.wait(timeout=60) == 1
    assert log.read_text().splitlines() == [
        "Error: VAULTD_FAST_PATHS must be auto, off, or some of client, server; not 'turbo'"
    ]


def test_the_public_paths_are_said_once_and_serve(env: DaemonEnv) -> None:
    assert env.vaultd("init").returncode == 0
    proc, log = env.start(VAULTD_FAST_PATHS="off")
    try:
        env.wait_healthy(proc, log)
        assert env.request("GET", "/api/credentials")[0] == 401
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    for name in ("client", "server"):
        line = f"fast path {name}: off (not in VAULTD_FAST_PATHS); using aiohttp's public API"
        assert text.count(line) == 1, text
    # The direct path needs none of aiohttp's internals: it serves on the public path too.
    assert "(aiohttp fast paths: client off, server off; proxied calls: direct)" in text


def test_wrong_key_is_one_line(env: DaemonEnv) -> None:
    assert env.vaultd("init").returncode == 0
    key = Path(env.vars["XDG_CONFIG_HOME"]) / "vaultd" / "master.key"
    key.write_bytes(os.urandom(32))
    proc, log = env.start()
    assert proc.wait(timeout=60) == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: wrong key"), lines
