"""Opening a vault: directories, key file, database and the wrapped data key.

``init_vault`` creates what is missing and never replaces a key; ``open_vault``
opens an existing vault after checking that no file in it is open to other
users (threat T2); ``Vault.unlock`` reads the key and unwraps the data key.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from vaultd import crypto
from vaultd.config import Config
from vaultd.credentials import CredentialStore
from vaultd.db import connect, write_transaction
from vaultd.errors import CryptoError, StorageError
from vaultd.fsperms import check_private, create_private_file, ensure_private_dir
from vaultd.sessions import SessionStore

FORMAT_VERSION = b"1"


def read_key_file(path: Path) -> bytes:
    check_private(path, "key file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CryptoError(
            f"key file {path} is missing; it is the only key that opens this vault"
        ) from None
    except OSError as exc:
        raise CryptoError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) != crypto.KEY_SIZE:
        raise CryptoError(
            f"key file {path} is damaged: a vaultd key is {crypto.KEY_SIZE} bytes, "
            f"this file has {len(data)}"
        )
    return data


@dataclass
class Vault:
    config: Config
    db: Database
    credentials: CredentialStore = field(init=False)
    sessions: SessionStore = field(init=False)
    _dek: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.credentials = CredentialStore(self.db, self.config.services)
        self.sessions = SessionStore(self.db)

    def meta(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else bytes(row[0])

    @property
    def initialised(self) -> bool:
        return self.meta("wrapped_dek") is not None

    def unlock(self) -> bytes:
        """The data key, unwrapped by the key file; cached for this process."""
        if self._dek is None:
            wrapped = self.meta("wrapped_dek")
            if wrapped is None:
                raise StorageError(
                    f"the vault at {self.config.db_path} is not initialised; run: vaultd init"
                )
            kek = read_key_file(self.config.key_file)
            try:
                self._dek = crypto.unwrap_key(kek, wrapped)
            except CryptoError:
                raise CryptoError(
                    f"wrong key: {self.config.key_file} does not open the vault at "
                    f"{self.config.db_path}"
                ) from None
        return self._dek

    def close(self) -> None:
        self._dek = None
        self.db.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_files(config: Config) -> None:
    check_private(config.data_dir, "data directory")
    for suffix in ("", "-wal", "-shm"):
        check_private(Path(f"{config.db_path}{suffix}"), "database file")
    check_private(config.key_file, "key file")


def open_vault(config: Config) -> Vault:
    """An existing, initialised vault; nothing is created."""
    if not config.db_path.exists():
        raise StorageError(f"no vault at {config.db_path}; create one with: vaultd init")
    _check_files(config)
    vault = Vault(config, connect(config.db_path))
    if not vault.initialised:
        vault.close()
        raise StorageError(f"the vault at {config.db_path} is not initialised; run: vaultd init")
    return vault


def init_vault(config: Config) -> tuple[Vault, bool]:
    """Create whatever is missing; return the unlocked vault and whether it was new.

    Order matters for crash safety: the key file is written (and synced) before
    the data key wrapped by it, so no crash leaves a vault with no key that opens it.
    """
    ensure_private_dir(config.data_dir, "data directory")
    _check_files(config)
    vault = Vault(config, connect(config.db_path, create=True))
    try:
        if vault.initialised:
            vault.unlock()  # an existing vault must open with the key we have
            return vault, False
        if not config.key_file.exists():
            ensure_private_dir(config.key_file.parent, "key directory")
            # A concurrent init may make it first: then that one is used.
            with contextlib.suppress(FileExistsError):
                create_private_file(config.key_file, crypto.new_key())
        kek = read_key_file(config.key_file)
        dek = crypto.new_key()
        try:
            with write_transaction(vault.db) as conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format_version", FORMAT_VERSION),
                        ("kek_mode", b"keyfile"),
                        ("wrapped_dek", crypto.wrap_key(kek, dek)),
                    ],
                )
        except sqlite3.IntegrityError:
            # A concurrent init won the race; its data key is the vault's.
            vault.unlock()
            return vault, False
        vault._dek = dek
        return vault, True
    except BaseException:
        vault.close()
        raise
