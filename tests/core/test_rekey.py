"""``vaultd rekey``: a new data key, and no crash point that loses the vault."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.support.cli import CLI, file_bytes_under
from tests.support.daemon import vaultd_argv
from vaultd import crypto
from vaultd.config import load_config
from vaultd.core.vault import open_vault
from vaultd.errors import CryptoError

N_CREDENTIALS = 300
ROUNDS = 5


def secrets_of(cli: CLI) -> dict[str, str]:
    with cli.vault() as vault:
        dek = vault.unlock()
        return {c.id: vault.credentials.reveal(dek, c) for c in vault.credentials.list()}


def wrapped_dek(cli: CLI) -> bytes:
    with cli.vault() as vault:
        value = vault.meta("wrapped_dek")
    assert value is not None
    return value


def test_rekey_changes_the_data_key_and_keeps_every_secret(initialised: CLI) -> None:
    for i in range(5):
        initialised.add("openai", f"k{i}", f"sk-proj-REKEYsecret{i:04d}xyz")
    before = secrets_of(initialised)
    old_wrapped = wrapped_dek(initialised)
    with initialised.vault() as vault:
        old_dek = vault.unlock()
        old_sealed = dict(vault.db.execute("SELECT id, sealed FROM credentials").fetchall())
    result = initialised.ok("rekey")
    assert "re-sealed 5 credentials" in result.output
    for secret in before.values():
        assert secret not in result.output
    assert wrapped_dek(initialised) != old_wrapped
    assert secrets_of(initialised) == before
    with initialised.vault() as vault:
        new_dek = vault.unlock()
        rows = vault.db.execute("SELECT id, service, sealed FROM credentials").fetchall()
    assert new_dek != old_dek
    for credential_id, service, sealed in rows:
        assert sealed != old_sealed[credential_id]
        # The old key no longer opens anything.
        try:
            crypto.unseal(old_dek, credential_id, service, sealed)
        except CryptoError:
            pass
        else:
            raise AssertionError("a credential still opens with the old data key")


def test_old_key_and_ciphertexts_leave_the_wal(initialised: CLI) -> None:
    """An open reader keeps SQLite's WAL around: the replaced pages must not stay in it."""
    initialised.add("openai", "k", "sk-proj-REKEYwalCHECK0001xyz")
    old_wrapped = wrapped_dek(initialised)
    with initialised.vault() as reader:
        old_sealed = bytes(reader.db.execute("SELECT sealed FROM credentials").fetchone()[0])
        initialised.ok("rekey")
        files = file_bytes_under(initialised.db_path.parent)
        for path, data in files.items():
            assert old_wrapped not in data, f"the old wrapped data key is still in {path}"
            assert old_sealed not in data, f"an old ciphertext is still in {path}"


def test_rekey_of_an_empty_vault(initialised: CLI) -> None:
    old = wrapped_dek(initialised)
    assert "re-sealed 0 credentials" in initialised.ok("rekey").output
    assert wrapped_dek(initialised) != old


def test_rekey_with_the_wrong_key_changes_nothing(initialised: CLI) -> None:
    initialised.add("openai", "primary", "sk-proj-WRONGKEYwrongkey0001")
    old = wrapped_dek(initialised)
    real = initialised.key_file.read_bytes()
    initialised.key_file.write_bytes(crypto.new_key())
    assert "wrong key" in initialised.fails("rekey")
    initialised.key_file.write_bytes(real)
    assert wrapped_dek(initialised) == old


def _fill(cli: CLI, n: int) -> dict[str, str]:
    """Many credentials, added directly (the CLI would take minutes for this many)."""
    with open_vault(load_config()) as vault:
        dek = vault.unlock()
        for i in range(n):
            vault.credentials.add(
                dek, service="openai", name=f"key{i:05d}", secret=f"sk-proj-KILL{i:05d}secretABC"
            )
    return secrets_of(cli)


def test_kill_9_during_rekey_never_loses_the_vault(initialised: CLI, tmp_path: Path) -> None:
    expected = _fill(initialised, N_CREDENTIALS)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(initialised.home),
        # A slow re-seal loop: the transaction stays open ~0.6 s, so most kills land in it.
        "VAULTD_TEST_REKEY_DELAY": "0.002",
    }
    rng = random.Random(20261122)
    outcomes: list[str] = []
    deadline = time.monotonic() + 60
    for _ in range(ROUNDS):
        assert time.monotonic() < deadline, "the kill rounds took too long"
        before = wrapped_dek(initialised)
        proc = subprocess.Popen(
            vaultd_argv("rekey"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 1.2))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)
        after = wrapped_dek(initialised)
        outcomes.append("done" if code == 0 else ("new" if after != before else "old"))
        # Whichever key the vault has now opens every credential, with its secret.
        assert secrets_of(initialised) == expected
    # At least one kill really landed mid-way (else this test proves nothing).
    assert "old" in outcomes, outcomes
    # And a rekey after all those kills still completes.
    initialised.ok("rekey")
    assert secrets_of(initialised) == expected


def test_rekey_refuses_while_the_daemon_runs(initialised: CLI) -> None:
    from vaultd.store.daemon_lock import InstanceLock

    initialised.add("openai", "primary", "sk-proj-RUNNINGrunning0001")
    old = wrapped_dek(initialised)
    lock = InstanceLock(initialised.db_path.parent)
    lock.acquire()  # what `vaultd serve` holds while it runs
    try:
        line = initialised.fails("rekey")
    finally:
        lock.release()
    assert "stop it first" in line
    assert wrapped_dek(initialised) == old
    initialised.ok("rekey")
    assert wrapped_dek(initialised) != old
