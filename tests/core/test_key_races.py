"""A data key replaced under a command that already holds it: refused, nothing lost.

Each race is made deterministic rather than timed: vault A unlocks (as the CLI
does before the secret is typed), the competing rekey or passwd commits
through the CLI or a second Vault, and then A writes. A write holding a stale
data key must fail with one clear line and leave every byte of the database as
it was, and every credential must still open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.support.cli import CLI
from tests.support.config import write_api_config
from tests.support.http import Mint, bearer, problem, start_client
from vaultd import crypto
from vaultd.cli import common
from vaultd.cli import credentials as cli_module
from vaultd.config import Config, load_config
from vaultd.core.rekey import rekey
from vaultd.core.vault import (
    DEK_CHANGED,
    KEY_CHANGED,
    UnlockedKey,
    Vault,
    change_passphrase,
    init_vault,
    open_vault,
)
from vaultd.errors import CryptoError
from vaultd.http.appkeys import VAULT

FIRST = "sk-proj-RACEfirst0001abcdefghij"
RACING = "sk-proj-RACEracing0002abcdefgh"
ROTATED = "sk-proj-RACErotated0003abcdefg"
PASSPHRASE = "race passphrase number one 1"
NEW_PASSPHRASE = "race passphrase number two 2"

Rows = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lowest Argon2id cost: passphrase-mode tests would otherwise take seconds each.
    monkeypatch.setattr(crypto, "PASSPHRASE_OPSLIMIT", nacl.pwhash.argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(crypto, "PASSPHRASE_MEMLIMIT", nacl.pwhash.argon2id.MEMLIMIT_MIN)


def private_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def pf(tmp_path: Path) -> Path:
    return private_file(tmp_path / "pass", PASSPHRASE)


@pytest.fixture
def new_pf(tmp_path: Path) -> Path:
    return private_file(tmp_path / "new-pass", NEW_PASSPHRASE)


@pytest.fixture
def locked(cli_env: CLI, pf: Path, fast_argon2: None) -> CLI:
    """A passphrase-locked vault holding openai/first."""
    cli_env.ok("--passphrase-file", str(pf), "init", "--passphrase")
    cli_env.ok("--passphrase-file", str(pf), "add", "openai", "first", input=FIRST + "\n")
    return cli_env


def rows_of(cli: CLI) -> Rows:
    """Every stored row of the tables a key race could damage, read afresh."""
    with cli.vault() as vault:
        return {
            table: [tuple(r) for r in vault.db.execute(sql).fetchall()]
            for table, sql in (
                ("meta", "SELECT key, value FROM meta ORDER BY key"),
                ("credentials", "SELECT * FROM credentials ORDER BY id"),
            )
        }


def secrets_in(config_cli: CLI, passphrase_file: Path | None = None) -> dict[str, str]:
    """Every credential's secret, opened with a freshly read key."""
    with open_vault(config_cli.config, passphrase_file=passphrase_file) as vault:
        return opened(vault)


def opened(vault: Vault) -> dict[str, str]:
    dek = vault.unlock()
    return {
        f"{c.service}/{c.name}": vault.credentials.reveal(dek, c) for c in vault.credentials.list()
    }


def doctor_says_all_open(cli: CLI, count: int, *pre: str) -> None:
    assert f"credentials: all {count} open" in cli.ok(*pre, "doctor").stdout


# -- add and rotate against rekey -------------------------------------------


def test_add_after_a_rekey_is_refused_and_writes_nothing(initialised: CLI) -> None:
    initialised.add("openai", "first", FIRST)
    with initialised.vault() as stale:
        dek = stale.unlock()
        initialised.ok("rekey")
        before = rows_of(initialised)
        with pytest.raises(CryptoError) as caught:
            stale.credentials.add(dek, service="openai", name="racing", secret=RACING)
        assert str(caught.value) == DEK_CHANGED
        # The cached key is as stale as the one in hand: asking again does not help.
        with pytest.raises(CryptoError, match="data key changed"):
            stale.credentials.add(stale.unlock(), service="openai", name="racing", secret=RACING)
        assert rows_of(initialised) == before
    assert secrets_in(initialised) == {"openai/first": FIRST}
    doctor_says_all_open(initialised, 1)


def test_rotate_after_a_rekey_is_refused_and_the_old_secret_still_opens(
    initialised: CLI,
) -> None:
    item = initialised.add("openai", "first", FIRST)
    with initialised.vault() as stale:
        dek = stale.unlock()
        initialised.ok("rekey")
        before = rows_of(initialised)
        with pytest.raises(CryptoError) as caught:
            stale.credentials.update(item["id"], dek=dek, secret=ROTATED, name="renamed")
        assert str(caught.value) == DEK_CHANGED
        assert rows_of(initialised) == before
        # What seals nothing needs no key, so a stale one does not stop it.
        stale.credentials.update(item["id"], name="renamed")
    assert secrets_in(initialised) == {"openai/renamed": FIRST}
    doctor_says_all_open(initialised, 1)


def test_a_rekey_in_the_same_process_retires_the_old_key_in_hand(initialised: CLI) -> None:
    with initialised.vault() as vault:
        old = vault.unlock()
        rekey(vault)
        with pytest.raises(CryptoError, match="not the data key this vault was unlocked with"):
            vault.credentials.add(old, service="openai", name="racing", secret=RACING)
        # The key rekey adopted is the vault's: writes with it go through.
        vault.credentials.add(vault.unlock(), service="openai", name="after", secret=RACING)
    assert secrets_in(initialised) == {"openai/after": RACING}


def test_cli_add_and_rotate_refuse_a_rekey_made_while_the_secret_is_typed(
    initialised: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = initialised.add("openai", "first", FIRST)
    real_read_secret = common.read_secret

    def rekey_while_typing(prompt: str, **how: str | None) -> str:
        # The CLI has unlocked the vault by now; the user is typing the secret.
        with open_vault(load_config()) as other:
            rekey(other)
        return RACING

    monkeypatch.setattr(cli_module, "read_secret", rekey_while_typing)
    assert initialised.fails("add", "openai", "racing") == f"Error: {DEK_CHANGED}"
    assert initialised.fails("rotate", "openai/first") == f"Error: {DEK_CHANGED}"
    assert [c["name"] for c in initialised.listing()] == ["first"]
    assert initialised.listing()[0]["hint"] == item["hint"]
    assert secrets_in(initialised) == {"openai/first": FIRST}
    doctor_says_all_open(initialised, 1)
    # "Run it again" works.
    monkeypatch.setattr(cli_module, "read_secret", real_read_secret)
    initialised.add("openai", "racing", RACING)
    initialised.ok("rotate", "openai/first", input=ROTATED + "\n")
    assert secrets_in(initialised) == {"openai/first": ROTATED, "openai/racing": RACING}


def test_a_vault_made_before_dek_id_gets_one_from_its_first_rekey(initialised: CLI) -> None:
    initialised.add("openai", "first", FIRST)
    with initialised.vault() as vault, vault.db.conn:
        vault.db.execute("DELETE FROM meta WHERE key = 'dek_id'")
    with initialised.vault() as stale:
        # No id stored reads as the empty one: such a vault works as before.
        stale.credentials.add(stale.unlock(), service="openai", name="second", secret=RACING)
        initialised.ok("rekey")
        assert len(stale.meta("dek_id") or b"") > 0
        with pytest.raises(CryptoError, match="data key changed"):
            stale.credentials.add(stale.unlock(), service="openai", name="racing", secret=RACING)
    assert secrets_in(initialised) == {"openai/first": FIRST, "openai/second": RACING}


# -- rekey against passwd and rekey -------------------------------------------


def test_rekey_refuses_a_passwd_made_after_its_unwrap(
    locked: CLI, pf: Path, new_pf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Rows] = []
    with open_vault(locked.config, passphrase_file=pf) as vault:
        unwrap = vault.unlock_with_kek

        def unwrap_then_passwd() -> UnlockedKey:
            key = unwrap()
            locked.ok("--passphrase-file", str(pf), "passwd", "--new-passphrase-file", str(new_pf))
            seen.append(rows_of(locked))
            return key

        monkeypatch.setattr(vault, "unlock_with_kek", unwrap_then_passwd)
        with pytest.raises(CryptoError) as caught:
            rekey(vault)
        assert str(caught.value) == KEY_CHANGED
    # Not the new data key wrapped by the old passphrase: nothing at all.
    assert rows_of(locked) == seen[0]
    assert secrets_in(locked, new_pf) == {"openai/first": FIRST}
    with pytest.raises(CryptoError, match="wrong passphrase"):
        secrets_in(locked, pf)
    doctor_says_all_open(locked, 1, "--passphrase-file", str(new_pf))
    locked.ok("--passphrase-file", str(new_pf), "rekey")
    assert secrets_in(locked, new_pf) == {"openai/first": FIRST}


def test_rekey_refuses_another_rekey_made_after_its_unwrap(
    initialised: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    initialised.add("openai", "first", FIRST)
    seen: list[Rows] = []
    with initialised.vault() as vault:
        unwrap = vault.unlock_with_kek

        def unwrap_then_rekey() -> UnlockedKey:
            key = unwrap()
            initialised.ok("rekey")
            seen.append(rows_of(initialised))
            return key

        monkeypatch.setattr(vault, "unlock_with_kek", unwrap_then_rekey)
        with pytest.raises(CryptoError, match="key changed while this command ran"):
            rekey(vault)
    assert rows_of(initialised) == seen[0]
    doctor_says_all_open(initialised, 1)


# -- passwd against rekey and passwd ------------------------------------------


def test_passwd_after_a_rekey_is_refused_and_the_old_passphrase_still_opens(
    locked: CLI, pf: Path, new_pf: Path
) -> None:
    with open_vault(locked.config, passphrase_file=pf) as stale:
        stale.unlock()
        locked.ok("--passphrase-file", str(pf), "rekey")
        before = rows_of(locked)
        with pytest.raises(CryptoError) as caught:
            change_passphrase(stale, NEW_PASSPHRASE.encode())
        assert str(caught.value) == DEK_CHANGED
        assert rows_of(locked) == before
    assert secrets_in(locked, pf) == {"openai/first": FIRST}
    with pytest.raises(CryptoError, match="wrong passphrase"):
        secrets_in(locked, new_pf)
    doctor_says_all_open(locked, 1, "--passphrase-file", str(pf))


def test_passwd_after_another_passwd_is_refused(locked: CLI, pf: Path, new_pf: Path) -> None:
    with open_vault(locked.config, passphrase_file=pf) as stale:
        stale.unlock()
        locked.ok("--passphrase-file", str(pf), "passwd", "--new-passphrase-file", str(new_pf))
        before = rows_of(locked)
        # Going through would silently undo the other passwd's passphrase.
        with pytest.raises(CryptoError) as caught:
            change_passphrase(stale, b"a third passphrase 3")
        assert str(caught.value) == KEY_CHANGED
        assert rows_of(locked) == before
    assert secrets_in(locked, new_pf) == {"openai/first": FIRST}


def test_passwd_twice_in_one_process(locked: CLI, pf: Path, new_pf: Path) -> None:
    with open_vault(locked.config, passphrase_file=pf) as vault:
        vault.unlock()
        change_passphrase(vault, b"an interim passphrase 5")
        change_passphrase(vault, NEW_PASSPHRASE.encode())
        vault.credentials.add(vault.unlock(), service="openai", name="second", secret=RACING)
    assert secrets_in(locked, new_pf) == {"openai/first": FIRST, "openai/second": RACING}


# -- the daemon's cached key ---------------------------------------------------


async def test_daemon_keeps_adding_and_rotating_after_a_passwd(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    pf: Path,
    new_pf: Path,
    fast_argon2: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_api_config(tmp_path)
    vault, _ = init_vault(config, passphrase=True, passphrase_file=pf)
    with vault:
        first = vault.credentials.add(vault.unlock(), service="local", name="first", secret=FIRST)
    monkeypatch.setenv("VAULTD_PASSPHRASE_FILE", str(pf))
    client = await start_client(aiohttp_client, config)
    daemon = client.app[VAULT]
    _session, token = daemon.sessions.create(
        name="t", scopes=["admin"], services=["*"], ttl=600, known_services=config.services
    )
    # passwd while the daemon runs (allowed: the data key itself does not change).
    with open_vault(config, passphrase_file=pf) as other:
        other.unlock()
        change_passphrase(other, NEW_PASSPHRASE.encode())
    created = await client.post(
        "/api/credentials",
        json={"service": "local", "name": "second", "secret": RACING},
        headers=bearer(token),
    )
    assert created.status == 201, await created.text()
    rotated = await client.patch(
        f"/api/credentials/{first.id}", json={"secret": ROTATED}, headers=bearer(token)
    )
    assert rotated.status == 200, await rotated.text()
    with open_vault(config, passphrase_file=new_pf) as fresh:
        assert opened(fresh) == {"local/first": ROTATED, "local/second": RACING}


async def test_daemon_refuses_to_seal_under_a_replaced_data_key(
    api_client: TestClient[Any, Any], api_vault: Vault, api_config: Config, mint: Mint
) -> None:
    # The instance lock keeps `vaultd rekey` from running beside the daemon;
    # this rekeys through the library anyway, to show the write path's own check.
    token = mint("admin")
    first = api_vault.credentials.add(
        api_vault.unlock(), service="local", name="first", secret=FIRST
    )
    with open_vault(api_config) as other:
        rekey(other)
    created = await api_client.post(
        "/api/credentials",
        json={"service": "local", "name": "second", "secret": RACING},
        headers=bearer(token),
    )
    await problem(created, 503, "vault-unavailable")
    rotated = await api_client.patch(
        f"/api/credentials/{first.id}", json={"secret": ROTATED}, headers=bearer(token)
    )
    await problem(rotated, 503, "vault-unavailable")
    with open_vault(api_config) as fresh:
        assert opened(fresh) == {"local/first": FIRST}
