"""Another user squats vaultd's port: `vaultd run` hands it no token (threat T2).

The squatter is a real process of another user (uid 65534) that binds the
port and answers ``/healthz`` exactly as vaultd does; it records every
request it gets. Creating it needs root (CI runs as root); elsewhere these
tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import CLI
from tests.support.daemon import vaultd_argv
from vaultd.cli.listener import listeners

NOBODY = 65534
SQUATTER = """
import encodings.idna, json, os, sys  # imported before setuid: the stdlib is root-only here
from http.server import BaseHTTPRequestHandler, HTTPServer
seen = open(sys.argv[1], "a", buffering=1)
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        seen.write(json.dumps({"path": self.path, "headers": dict(self.headers)}) + "\\n")
        body = b'{"status": "ok", "version": "0.1.0"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
os.setgid(65534)
os.setuid(65534)
server = HTTPServer(("127.0.0.1", 0), Health)  # the socket is the other user's
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def squatter(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.getuid() != 0:
        pytest.skip("a second user's process needs root to start")
    log = tmp_path / "squatter-saw.jsonl"
    log.touch()
    log.chmod(0o666)
    proc = subprocess.Popen(
        [sys.executable, "-c", SQUATTER, str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def run_vaultd(cli: CLI, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(cli.home), "VAULTD_URL": url}
    return subprocess.run(
        vaultd_argv(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_run_hands_no_token_to_another_users_listener(
    initialised: CLI, squatter: tuple[str, Path]
) -> None:
    url, saw = squatter
    initialised.add("openai", "primary", "sk-proj-SQUATkeySQUATkey0001")
    done = run_vaultd(initialised, url, "run", "--service", "openai", "--", "true")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    port = url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in lines[0] and f"uid {NOBODY}" in lines[0], lines[0]
    assert saw.read_text() == ""  # not even asked /healthz: nothing, let alone a token
    with initialised.vault() as vault:
        assert vault.sessions.list() == []  # no token was minted


def test_doctor_fails_on_a_squatted_port(initialised: CLI, squatter: tuple[str, Path]) -> None:
    url, _ = squatter
    done = run_vaultd(initialised, url, "doctor")
    assert done.returncode == 1
    daemon = [line for line in done.stdout.splitlines() if " daemon" in line]
    assert daemon and daemon[0].startswith("FAIL") and f"uid {NOBODY}" in daemon[0], done.stdout


def test_a_daemon_url_off_this_machine_is_refused(initialised: CLI) -> None:
    done = run_vaultd(initialised, "http://192.0.2.1:3978", "run", "--", "true")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: VAULTD_URL must name this machine (127.0.0.1, localhost or [::1]), not"
        " '192.0.2.1': a token is handed only to a daemon the kernel shows is yours"
    ]


def test_the_kernel_tables_are_read_right(tmp_path: Path) -> None:
    tcp = tmp_path / "tcp"
    tcp.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0100007F:0F8A 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000\n"
        "   1: 00000000:0F8A 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
        "   2: 0100007F:0F8A 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  33\n"
        "   3: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  7\n"
    )
    tcp6 = tmp_path / "tcp6"
    tcp6.write_text(
        "  sl  local_address                         remote_address  st tx rx tr tm uid\n"
        "   0: 00000000000000000000000001000000:0F8A 00000000000000000000000000000000:0000"
        " 0A 00000000:00000000 00:00000000 00000000 65534\n"
    )
    found = sorted(listeners(3978, (tcp, tcp6)))
    everywhere = "0.0.0.0"  # noqa: S104 (parsed, not bound)
    assert found == [(everywhere, 0), ("127.0.0.1", 1000), ("::1", 65534)]
