"""Rotating the data key (DEK): every credential re-sealed under a new one.

Everything happens in ONE write transaction: the re-sealed rows and the new
wrapped DEK commit together or not at all. SQLite's WAL makes the commit
atomic, so a crash (kill -9, power cut) at any point leaves either the old
DEK with the old ciphertexts or the new DEK with the new ones, never a mix.
The key encryption key (key file or passphrase) is unchanged.

The key is unwrapped before the transaction; inside it, the stored wrapped key
must still be byte for byte the one unwrapped, else a passwd (or another rekey)
committed in between and the new data key would be wrapped by a stale
passphrase. The new wrapped key comes with a new ``dek_id``, which makes every
write still holding the old data key refuse instead of sealing under it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vaultd import crypto
from vaultd.core.vault import Vault, new_dek_id
from vaultd.errors import CryptoError, StorageError
from vaultd.store.daemon_lock import AlreadyRunning, InstanceLock
from vaultd.store.db import forget_replaced_pages, write_transaction

# Test-only: sleep this many seconds per re-sealed credential, so a test can
# kill the process while the transaction is open. Never set it in production.
_SLOW_ENV = "VAULTD_TEST_REKEY_DELAY"


@contextlib.contextmanager
def daemon_stopped(data_dir: Path) -> Iterator[None]:
    """Hold the daemon's instance lock: refuse while it runs, and keep it from starting.

    A running daemon keeps the old data key in memory; a credential it sealed
    with it after the rekey committed would never open again.
    """
    lock = InstanceLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise StorageError(
            f"{exc}; stop it first (systemctl --user stop vaultd), rekey, then start it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def rekey(vault: Vault) -> int:
    """Re-seal every credential under a new DEK; the number of credentials re-sealed."""
    key = vault.unlock_with_kek()
    old = key.dek
    new = crypto.new_key()
    new_wrapped = crypto.wrap_key(key.kek, new)
    new_id = new_dek_id()
    delay = float(os.environ.get(_SLOW_ENV, "0") or 0)
    with write_transaction(vault.db) as conn:
        vault.check_wrapped(key.wrapped)
        # Read inside the transaction: a credential added meanwhile by the
        # daemon would otherwise stay sealed under the old key.
        rows = conn.execute("SELECT id, service, sealed FROM credentials").fetchall()
        for credential_id, service, sealed in rows:
            try:
                plaintext = crypto.unseal(old, credential_id, service, bytes(sealed))
            except CryptoError:
                raise CryptoError(
                    f"credential {credential_id} does not open; nothing was changed "
                    "(run: vaultd doctor)"
                ) from None
            conn.execute(
                "UPDATE credentials SET sealed = ? WHERE id = ?",
                [crypto.seal(new, credential_id, service, plaintext), credential_id],
            )
            if delay:
                time.sleep(delay)
        # An upsert: a vault made before dek_id existed has no row for it yet.
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("wrapped_dek", new_wrapped), ("dek_id", new_id)],
        )
    # The old ciphertexts and wrapped key must not stay behind in the WAL.
    forget_replaced_pages(vault.db)
    vault.adopt_key(new, new_wrapped, new_id)
    return len(rows)
