"""Threat T1: a copy of the database (or of the whole data dir) reveals no secret,
and ciphertexts moved between rows, or a row's service edited, never open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import CLI, file_bytes_under
from vaultd.errors import CryptoError

SECRETS = {
    ("openai", "primary"): "sk-proj-AAAAbbbbCCCCddddEEEEffffGGGGhhhh1111",
    ("anthropic", "main"): "sk-ant-api03-ZZZZyyyyXXXXwwwwVVVVuuuu2222",
    ("github", "ci"): "ghp_QQQQrrrrSSSSttttUUUUvvvvWWWW3333",
}
WINDOW = 8


def windows(secret: str) -> set[bytes]:
    """Every run of 8 characters of the secret: none may be on disk in any encoding."""
    found: set[bytes] = set()
    for encoding in ("utf-8", "utf-16-le"):
        data = secret.encode(encoding)
        step = len("a".encode(encoding))
        found |= {data[i : i + WINDOW * step] for i in range(0, len(data) - WINDOW * step + 1)}
    return found


def test_no_secret_byte_run_on_disk(initialised: CLI) -> None:
    rotated_away = "sk-old-MMMMnnnnOOOOppppQQQQrrrr4444"
    deleted = "sk-gone-KKKKllllJJJJiiiiHHHHgggg5555"
    initialised.add("openai", "old", rotated_away)
    initialised.ok("rotate", "openai/old", input="sk-new-abcdefghijklmnopqrstuvwxyz99\n")
    initialised.add("openai", "doomed", deleted)
    initialised.ok("rm", "openai/doomed", "--yes")
    # Keep a connection open while adding, so the WAL file is on disk and searched too.
    with initialised.vault() as vault:
        dek = vault.unlock()
        for (service, name), secret in SECRETS.items():
            vault.credentials.add(dek, service=service, name=name, secret=secret)
        files = file_bytes_under(initialised.db_path.parent, initialised.key_file.parent)
        assert any(p.name.endswith("-wal") for p in files), "the WAL should be searched too"
        needles = set().union(*(windows(s) for s in [*SECRETS.values(), rotated_away, deleted]))
        for path, data in files.items():
            for needle in needles:
                assert needle not in data, f"{needle!r} found in {path}"
        # ... and yet every secret is there, sealed, for the holder of the key.
        for (service, name), secret in SECRETS.items():
            cred = vault.credentials.resolve(f"{service}/{name}")
            assert vault.credentials.reveal(dek, cred) == secret


def sealed_of(db_path: Path, ref_name: str) -> bytes:
    with sqlite3.connect(db_path) as conn:
        return bytes(
            conn.execute("SELECT sealed FROM credentials WHERE name = ?", [ref_name]).fetchone()[0]
        )


def test_removed_and_rotated_ciphertexts_leave_the_wal_too(initialised: CLI) -> None:
    """With the daemon's connection open, SQLite keeps the WAL: old pages must not stay in it."""
    initialised.add("openai", "doomed", "sk-gone-KKKKllllJJJJiiiiHHHHgggg5555")
    initialised.add("openai", "turned", "sk-old-MMMMnnnnOOOOppppQQQQrrrr4444")
    gone = sealed_of(initialised.db_path, "doomed")
    replaced = sealed_of(initialised.db_path, "turned")
    with initialised.vault() as daemon_like:
        daemon_like.credentials.list()  # an idle reader, as the daemon's connections are
        initialised.ok("rm", "openai/doomed", "--yes")
        initialised.ok("rotate", "openai/turned", input="sk-new-abcdefghijklmnopqrstuvwxyz99\n")
        files = file_bytes_under(initialised.db_path.parent)
        assert initialised.db_path.with_name("vault.db-wal") in files
        for path, data in files.items():
            assert gone not in data, f"the removed ciphertext is still in {path}"
            assert replaced not in data, f"the rotated-away ciphertext is still in {path}"


@pytest.fixture
def three(initialised: CLI) -> CLI:
    for (service, name), secret in SECRETS.items():
        initialised.add(service, name, secret)
    return initialised


def edit(db_path: object, sql: str, *params: object) -> None:
    conn = sqlite3.connect(str(db_path))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def reveal(env: CLI, ref: str) -> str:
    with env.vault() as vault:
        return vault.credentials.reveal(vault.unlock(), vault.credentials.resolve(ref))


def test_swapped_ciphertexts_fail_to_open(three: CLI) -> None:
    conn = sqlite3.connect(three.db_path)
    rows = dict(conn.execute("SELECT service, sealed FROM credentials").fetchall())
    conn.close()
    edit(
        three.db_path,
        "UPDATE credentials SET sealed = ? WHERE service = 'openai'",
        rows["anthropic"],
    )
    edit(
        three.db_path,
        "UPDATE credentials SET sealed = ? WHERE service = 'anthropic'",
        rows["openai"],
    )
    for ref in ("openai/primary", "anthropic/main"):
        with pytest.raises(CryptoError) as caught:
            reveal(three, ref)
        message = str(caught.value)
        assert "\n" not in message and ref in message and "altered or moved" in message
        for secret in SECRETS.values():
            assert secret not in message
    # the untouched row still opens
    assert reveal(three, "github/ci") == SECRETS[("github", "ci")]


def test_edited_service_fails_to_open(three: CLI) -> None:
    """Pointing the openai key at another service must not hand it to that service."""
    edit(three.db_path, "UPDATE credentials SET service = 'groq' WHERE service = 'openai'")
    with pytest.raises(CryptoError, match="altered or moved"):
        reveal(three, "groq/primary")


def test_ciphertext_copied_to_a_new_id_fails_to_open(three: CLI) -> None:
    edit(
        three.db_path,
        "UPDATE credentials SET id = '01900000-0000-7000-8000-000000000000'"
        " WHERE service = 'openai'",
    )
    with pytest.raises(CryptoError):
        reveal(three, "openai/primary")


def test_one_flipped_byte_in_a_stored_ciphertext_fails_to_open(three: CLI) -> None:
    conn = sqlite3.connect(three.db_path)
    (sealed,) = conn.execute("SELECT sealed FROM credentials WHERE service = 'github'").fetchone()
    conn.close()
    for index in (0, 1, 24, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[index] ^= 0x01
        edit(
            three.db_path,
            "UPDATE credentials SET sealed = ? WHERE service = 'github'",
            bytes(damaged),
        )
        with pytest.raises(CryptoError):
            reveal(three, "github/ci")
    edit(three.db_path, "UPDATE credentials SET sealed = ? WHERE service = 'github'", sealed)
    assert reveal(three, "github/ci") == SECRETS[("github", "ci")]


def test_wrapped_data_key_edited_is_wrong_key(three: CLI) -> None:
    conn = sqlite3.connect(three.db_path)
    (wrapped,) = conn.execute("SELECT value FROM meta WHERE key = 'wrapped_dek'").fetchone()
    conn.close()
    damaged = bytearray(wrapped)
    damaged[-1] ^= 0xFF
    edit(three.db_path, "UPDATE meta SET value = ? WHERE key = 'wrapped_dek'", bytes(damaged))
    err = three.fails("add", "openai", "x", input="sk-x\n")
    assert "wrong key" in err
