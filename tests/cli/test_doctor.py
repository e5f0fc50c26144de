"""``vaultd doctor``: one line per check; exit 1 on any FAIL; never a secret."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support.cli import CLI
from vaultd import crypto
from vaultd.cli.main import cli as vaultd_cli

SECRET = "sk-proj-DOCTORdoctorDOCTOR0001"
LEVELS = ("ok", "FAIL", "warn", "info")


def doctor(cli: CLI, code: int, **env: str) -> dict[str, str]:
    """Run doctor; its lines as {check name: line}."""
    result = cli.runner.invoke(vaultd_cli, ["doctor"], env=env)
    assert result.exit_code == code, result.output
    # CliRunner swallows a crash into result.exception: a crash is a failure here.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        level, _, rest = line.partition(" ")
        assert level in LEVELS, line
        name = rest.strip().split(":", 1)[0]
        lines[name] = line
    return lines


def test_healthy_vault(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    lines = doctor(initialised, 0, VAULTD_URL="http://127.0.0.1:9")
    assert lines["config"].startswith("ok ")
    assert lines["permissions"] == "ok   permissions: data dir 700, database 600, key file 600"
    assert lines["key"].startswith("ok ")
    assert lines["integrity"].startswith("ok ")
    assert lines["schema"].startswith("ok ")
    assert lines["credentials"] == "ok   credentials: all 1 open"
    # Nothing listens on the discard port: a warning, not a failure.
    assert lines["daemon"].startswith("warn ")
    assert lines["systemd"].startswith("info ") and "no user unit" in lines["systemd"]


def test_key_file_0644_fails(initialised: CLI) -> None:
    initialised.key_file.chmod(0o644)
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert lines["permissions"].startswith("FAIL ")
    assert "chmod 600" in lines["permissions"]
    assert lines["key"].startswith("FAIL ")


def test_wrong_key_fails(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    initialised.key_file.write_bytes(crypto.new_key())
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert lines["permissions"].startswith("ok ")
    assert lines["key"].startswith("FAIL ") and "wrong key" in lines["key"]
    assert "credentials" not in lines


def test_corrupt_database_fails(initialised: CLI) -> None:
    data = bytearray(initialised.db_path.read_bytes())
    data[:16] = b"not a database!!"
    initialised.db_path.write_bytes(bytes(data))
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert lines["database"].startswith("FAIL ")


def test_damaged_page_fails_the_integrity_check(initialised: CLI) -> None:
    for i in range(40):
        initialised.add("openai", f"k{i}", f"sk-proj-PAGEpage{i:04d}")
    # Checkpoint the WAL into the file, then damage a page past the schema page.
    with initialised.vault() as vault:
        vault.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(initialised.db_path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[2 * page + 8 : 3 * page] = b"\xff" * (page - 8)
    initialised.db_path.write_bytes(bytes(data))
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert any(line.startswith("FAIL ") for line in lines.values()), lines


def test_damaged_table_page_is_a_fail_line_not_a_crash(initialised: CLI) -> None:
    for i in range(300):
        initialised.add("openai", f"k{i}", f"sk-proj-PAGEpage{i:04d}xxxxxxxxxxxxxxxx")
    with initialised.vault() as vault:
        vault.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(initialised.db_path.read_bytes())
    assert len(data) > 16384 + 100
    data[16384 : 16384 + 100] = b"\xab" * 100  # the page header too
    initialised.db_path.write_bytes(bytes(data))
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert any(line.startswith("FAIL ") for line in lines.values()), lines
    # The other verbs say so in one line too.
    assert "Error: " in initialised.fails("list")


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("credentials", "metadata", "{not json"),
        ("credentials", "metadata", "[1, 2]"),
        ("sessions", "scopes", "nope"),
        ("sessions", "services", '{"a": 1}'),
    ],
)
def test_edited_json_columns_are_one_clear_line(
    initialised: CLI, table: str, column: str, value: str
) -> None:
    initialised.add("openai", "primary", SECRET)
    initialised.ok("session", "create")
    with initialised.vault() as vault:
        vault.db.execute(f"UPDATE {table} SET {column} = ?", [value])  # noqa: S608
        vault.db.conn.commit()
    verb = ["list"] if table == "credentials" else ["session", "list"]
    line = initialised.fails(*verb)
    assert "is damaged" in line and column in line
    lines = doctor(initialised, 1 if table == "credentials" else 0, VAULTD_URL="http://127.0.0.1:9")
    if table == "credentials":
        assert lines["database"].startswith("FAIL ") and column in lines["database"]


def test_sealed_value_that_does_not_open_fails(initialised: CLI) -> None:
    added = initialised.add("openai", "primary", SECRET)
    with initialised.vault() as vault:
        vault.db.execute("UPDATE credentials SET service = 'anthropic' WHERE id = ?", [added["id"]])
        vault.db.conn.commit()
    lines = doctor(initialised, 1, VAULTD_URL="http://127.0.0.1:9")
    assert lines["credentials"].startswith("FAIL ") and added["id"] in lines["credentials"]


def test_bad_config_fails(cli_env: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    lines = doctor(cli_env, 1, VAULTD_CONFIG=str(bad))
    assert list(lines) == ["config"] and lines["config"].startswith("FAIL ")


def test_no_vault_fails(cli_env: CLI) -> None:
    lines = doctor(cli_env, 1, VAULTD_URL="http://127.0.0.1:9")
    assert lines["database"].startswith("FAIL ") and "vaultd init" in lines["database"]


@pytest.fixture
def fake_daemon() -> Iterator[str]:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "version": "9.8.7"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_reachable_daemon_and_installed_unit(initialised: CLI, fake_daemon: str) -> None:
    unit = initialised.home / ".config" / "systemd" / "user" / "vaultd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    lines = doctor(initialised, 0, VAULTD_URL=fake_daemon)
    assert lines["daemon"] == f"ok   daemon: vaultd 9.8.7 at {fake_daemon}"
    assert "is installed" in lines["systemd"]


def test_doctor_does_not_import_aiohttp(initialised: CLI) -> None:
    code = (
        "import sys\n"
        "from vaultd.cli.main import cli\n"
        "try:\n"
        "    cli(['doctor'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'aiohttp' not in sys.modules, 'doctor imported aiohttp'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"HOME": str(initialised.home), "VAULTD_URL": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok   key:" in result.stdout
