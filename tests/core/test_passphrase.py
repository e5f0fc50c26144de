"""Passphrase mode: init, use, serve and proxy, a wrong passphrase, passwd."""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import nacl.pwhash
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.cli import CLI
from tests.support.config import write_proxy_config
from tests.support.daemon import vaultd_argv
from tests.support.http import DaemonTestServer, bearer
from tests.support.upstream import StartUpstream
from vaultd import crypto
from vaultd.config import load_config
from vaultd.core import keysource
from vaultd.core.vault import init_vault, open_vault
from vaultd.daemon.app import create_app
from vaultd.http.appkeys import VAULT

PASSPHRASE = "correct horse battery staple 7"
OTHER = "a different passphrase entirely 9"
SECRET = "sk-proj-PASSPHRASEmode0001secret"

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture(autouse=True)
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Minimum Argon2id limits: the suite stays fast (the real ones are stored per vault)."""
    monkeypatch.setattr(crypto, "PASSPHRASE_OPSLIMIT", nacl.pwhash.argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(crypto, "PASSPHRASE_MEMLIMIT", nacl.pwhash.argon2id.MEMLIMIT_MIN)


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def pf(tmp_path: Path) -> Path:
    return secret_file(tmp_path / "pass", PASSPHRASE)


@pytest.fixture
def locked(cli_env: CLI, pf: Path) -> CLI:
    result = cli_env.ok("--passphrase-file", str(pf), "init", "--passphrase")
    assert "locked by a passphrase" in result.stderr
    assert PASSPHRASE not in result.output
    return cli_env


def no_leak(text: str) -> None:
    for secret in (PASSPHRASE, OTHER, SECRET):
        assert secret not in text


def test_init_stores_salt_and_limits_and_no_key_file(locked: CLI, pf: Path) -> None:
    assert not locked.key_file.exists()
    with open_vault(locked.config, passphrase_file=pf) as vault:
        assert vault.meta("kek_mode") == b"passphrase"
        salt = vault.meta("kdf_salt")
        assert salt is not None and len(salt) == crypto.PASSPHRASE_SALT_SIZE
        assert vault.meta("kdf_opslimit") == str(nacl.pwhash.argon2id.OPSLIMIT_MIN).encode()
        assert vault.meta("kdf_memlimit") == str(nacl.pwhash.argon2id.MEMLIMIT_MIN).encode()
    # Running init again only checks that the passphrase opens it.
    assert "opens with the passphrase" in locked.ok("--passphrase-file", str(pf), "init").stdout


def test_add_and_reveal_with_the_passphrase(locked: CLI, pf: Path) -> None:
    out = locked.ok(
        "--passphrase-file", str(pf), "add", "openai", "primary", input=SECRET + "\n"
    ).output
    no_leak(out)
    with open_vault(locked.config, passphrase_file=pf) as vault:
        [credential] = vault.credentials.list()
        assert vault.credentials.reveal(vault.unlock(), credential) == SECRET
    # Listing needs no key at all.
    assert "primary" in locked.ok("list").stdout


def test_wrong_passphrase_is_one_line(locked: CLI, tmp_path: Path) -> None:
    wrong = secret_file(tmp_path / "wrong", OTHER)
    line = locked.fails("--passphrase-file", str(wrong), "add", "openai", "x", input=SECRET + "\n")
    assert line.startswith("Error: wrong passphrase")
    no_leak(line)


def test_open_passphrase_file_is_refused(locked: CLI, tmp_path: Path) -> None:
    loose = secret_file(tmp_path / "loose", PASSPHRASE, mode=0o644)
    line = locked.fails("--passphrase-file", str(loose), "add", "openai", "x", input=SECRET + "\n")
    assert "chmod 600" in line
    no_leak(line)


def test_no_passphrase_source_is_one_line(locked: CLI) -> None:
    line = locked.fails("add", "openai", "x", input=SECRET + "\n")
    assert "--passphrase-file" in line


def test_piped_secret_and_passphrase_from_the_terminal(
    locked: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`printf sk-... | vaultd add`: stdin holds the secret, the terminal the passphrase."""
    asked: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        asked.append(prompt)
        return PASSPHRASE

    monkeypatch.setattr(keysource, "terminal_available", lambda: True)
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    locked.ok("add", "openai", "piped", input=SECRET + "\n")
    assert asked == ["Vault passphrase: "]
    assert [c["name"] for c in locked.listing()] == ["piped"]


def test_env_and_systemd_credential_sources(
    locked: CLI, pf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTD_PASSPHRASE_FILE", str(pf))
    locked.ok("add", "openai", "a", input=SECRET + "\n")
    monkeypatch.delenv("VAULTD_PASSPHRASE_FILE")
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    secret_file(creds / "vaultd-passphrase", PASSPHRASE)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    locked.ok("add", "openai", "b", input=SECRET + "\n")
    assert len(locked.listing()) == 2


def test_passwd_rewraps_and_everything_still_opens(locked: CLI, pf: Path, tmp_path: Path) -> None:
    locked.ok("--passphrase-file", str(pf), "add", "openai", "primary", input=SECRET + "\n")
    with open_vault(locked.config, passphrase_file=pf) as vault:
        old_salt = vault.meta("kdf_salt")
        old_sealed = vault.db.execute("SELECT sealed FROM credentials").fetchall()
    new = secret_file(tmp_path / "new", OTHER)
    out = locked.ok("--passphrase-file", str(pf), "passwd", "--new-passphrase-file", str(new))
    no_leak(out.output)
    # The old passphrase no longer opens it; the new one does, with the same ciphertexts.
    assert "wrong passphrase" in locked.fails(
        "--passphrase-file", str(pf), "add", "openai", "x", input=SECRET + "\n"
    )
    with open_vault(locked.config, passphrase_file=new) as vault:
        assert vault.meta("kdf_salt") != old_salt
        assert vault.db.execute("SELECT sealed FROM credentials").fetchall() == old_sealed
        [credential] = vault.credentials.list()
        assert vault.credentials.reveal(vault.unlock(), credential) == SECRET
    doctor = locked.ok("--passphrase-file", str(new), "doctor").stdout
    assert "ok   key: the passphrase opens the vault" in doctor
    assert "ok   credentials: all 1 open" in doctor
    assert "key file" not in doctor
    # rekey works in passphrase mode too.
    locked.ok("--passphrase-file", str(new), "rekey")
    with open_vault(locked.config, passphrase_file=new) as vault:
        [credential] = vault.credentials.list()
        assert vault.credentials.reveal(vault.unlock(), credential) == SECRET


def test_passwd_with_the_wrong_current_passphrase_changes_nothing(
    locked: CLI, pf: Path, tmp_path: Path
) -> None:
    wrong = secret_file(tmp_path / "wrong", OTHER)
    new = secret_file(tmp_path / "new", "yet another one")
    line = locked.fails(
        "--passphrase-file", str(wrong), "passwd", "--new-passphrase-file", str(new)
    )
    assert "wrong passphrase" in line
    locked.ok("--passphrase-file", str(pf), "add", "openai", "x", input=SECRET + "\n")


def test_passwd_on_a_key_file_vault_is_one_line(initialised: CLI, pf: Path) -> None:
    line = initialised.fails("passwd", "--new-passphrase-file", str(pf))
    assert "key file" in line


async def test_serve_and_proxy_in_passphrase_mode(
    tmp_path: Path,
    pf: Path,
    start_upstream: StartUpstream,
    aiohttp_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = await start_upstream()
    config = write_proxy_config(tmp_path / "config.toml", upstream.url)
    vault, created = init_vault(config, passphrase=True, passphrase_file=pf)
    with vault:
        assert created
        vault.credentials.add(vault.unlock(), service="openai", name="p", secret=SECRET)
    assert not config.key_file.exists()
    # What `vaultd serve` reads (or --passphrase-file, which sets it).
    monkeypatch.setenv("VAULTD_PASSPHRASE_FILE", str(pf))
    client = await aiohttp_client(DaemonTestServer(create_app(config), host="127.0.0.1"))
    _s, token = client.app[VAULT].sessions.create(
        name="t", scopes=["proxy"], services=["*"], ttl=600, known_services=config.services
    )
    resp = await client.get("/proxy/openai/v1/models", headers=bearer(token))
    assert resp.status == 200
    assert upstream.seen[-1].headers["Authorization"] == f"Bearer {SECRET}"


def test_serve_with_a_wrong_passphrase_is_one_line(cli_env: CLI, pf: Path, tmp_path: Path) -> None:
    config = load_config()
    vault, _ = init_vault(config, passphrase=True, passphrase_file=pf)
    vault.close()
    wrong = secret_file(tmp_path / "wrong", OTHER)
    result = subprocess.run(
        vaultd_argv("--passphrase-file", str(wrong), "serve", "--port", "0"),
        env={"HOME": str(cli_env.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong passphrase" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    no_leak(result.stderr + result.stdout)


def test_init_passphrase_on_a_key_file_vault_is_one_line(initialised: CLI, pf: Path) -> None:
    line = initialised.fails("--passphrase-file", str(pf), "init", "--passphrase")
    assert "only to a new vault" in line
    assert initialised.key_file.exists()
