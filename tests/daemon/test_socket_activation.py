"""Socket activation: `vaultd serve` takes systemd's listening socket (fd 3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vaultd.daemon.server import systemd_socket
from vaultd.errors import VaultdError

# What systemd does before exec: the socket on fd 3, LISTEN_PID = the new pid.
LAUNCHER = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.dup2(fd, 3)\n"
    "os.close(fd)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='vaultd')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'vaultd', 'serve', '--port', '9'])\n"
)


def test_serve_uses_the_passed_socket(isolated_home: Path, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    log = tmp_path / "serve.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(listener.fileno())],
            env={"HOME": str(isolated_home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            pass_fds=(listener.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    listener.close()  # the daemon holds it now
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        body = None
        for _ in range(200):  # at most ~20 s
            assert proc.poll() is None, log.read_text()
            try:
                with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                    body = json.loads(reply.read())
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None and body["status"] == "ok", log.read_text()
        # It did not bind --port 9: the passed socket replaced it.
        assert f"127.0.0.1:{port}" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()


def test_variables_for_another_process_are_ignored() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd_socket(env) is None
    assert env == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}


def test_more_than_one_socket_is_refused() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    with pytest.raises(VaultdError, match="2 sockets"):
        systemd_socket(env)
    assert "LISTEN_PID" not in env
