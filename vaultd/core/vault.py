"""Opening a vault: directories, key file, database and the wrapped data key.

``init_vault`` creates what is missing and never replaces a key; ``open_vault``
opens an existing vault after checking that no file in it is open to other
users (threat T2); ``Vault.unlock`` reads the key and unwraps the data key.

The data key is unwrapped before a write's transaction (in the CLI, before the
secret is typed), so another process may replace it in between: ``vaultd rekey``
re-seals everything under a new data key, ``vaultd passwd`` re-wraps the same
one. Every write that depends on the key it read checks, inside its own
``BEGIN IMMEDIATE`` transaction, that the key is still the vault's: sealing
checks the random ``dek_id`` (new with every rekey, kept by passwd, so a
daemon's cached key stays good across a passwd), and re-wrapping checks the
wrapped bytes themselves.
"""

from __future__ import annotations

import contextlib
import hmac
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from nacl.utils import random as nacl_random
from sqlite_utils import Database

from vaultd import crypto
from vaultd.config import Config
from vaultd.core.credentials import CredentialStore
from vaultd.core.keysource import get_passphrase
from vaultd.core.sessions import SessionStore
from vaultd.errors import CryptoError, StorageError
from vaultd.fsperms import check_private, create_private_file, ensure_private_dir
from vaultd.store.db import connect, forget_replaced_pages, write_transaction

FORMAT_VERSION = b"1"
KEYFILE_MODE = b"keyfile"
PASSPHRASE_MODE = b"passphrase"
DEK_ID_SIZE = 16
_KDF_KEYS = ("kdf_salt", "kdf_opslimit", "kdf_memlimit")
# Everything unlocking needs, in one statement: one snapshot, so a passwd or
# rekey committing meanwhile cannot pair one wrapped key with another's salt or id.
_KEY_META_SQL = (
    "SELECT key, value FROM meta WHERE key IN"
    " ('wrapped_dek', 'dek_id', 'kek_mode', 'kdf_salt', 'kdf_opslimit', 'kdf_memlimit')"
)
DEK_CHANGED = (
    "the vault's data key changed while this command ran (vaultd rekey); "
    "nothing was written: run it again"
)
KEY_CHANGED = (
    "the vault's key changed while this command ran (vaultd passwd or rekey); "
    "nothing was written: run it again"
)


def new_dek_id() -> bytes:
    """A fresh random id for a new data key (not secret: it only names the key)."""
    return bytes(nacl_random(DEK_ID_SIZE))


def passphrase_params() -> dict[str, bytes]:
    """A fresh salt and the current Argon2id limits, as stored in ``meta``.

    The limits are stored so that a later vaultd with other defaults still
    derives the same key (read from ``crypto`` at call time: tests lower them).
    """
    return {
        "kdf_salt": bytes(nacl_random(crypto.PASSPHRASE_SALT_SIZE)),
        "kdf_opslimit": str(crypto.PASSPHRASE_OPSLIMIT).encode("ascii"),
        "kdf_memlimit": str(crypto.PASSPHRASE_MEMLIMIT).encode("ascii"),
    }


def kek_from_passphrase(passphrase: bytes, params: dict[str, bytes | None]) -> bytes:
    salt, ops, mem = params["kdf_salt"], params["kdf_opslimit"], params["kdf_memlimit"]
    if salt is None or ops is None or mem is None or not ops.isdigit() or not mem.isdigit():
        raise CryptoError("the stored passphrase parameters are damaged")
    return crypto.passphrase_kek(passphrase, salt, int(ops), int(mem))


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


@dataclass(frozen=True)
class UnlockedKey:
    """The data key as unwrapped from one read of ``meta``, and what it was read with."""

    dek: bytes = field(repr=False)
    kek: bytes = field(repr=False)
    wrapped: bytes = field(repr=False)
    dek_id: bytes


@dataclass
class Vault:
    config: Config
    db: Database
    credentials: CredentialStore = field(init=False)
    sessions: SessionStore = field(init=False)
    _dek: bytes | None = field(default=None, repr=False)
    # Passphrase mode: an explicitly named passphrase file (else keysource's order).
    passphrase_file: Path | None = None
    # Which data key _dek is (meta's dek_id when it was read; b"" for a vault
    # made before dek_id existed), and the wrapped bytes it was read from.
    _dek_id: bytes = field(default=b"", init=False, repr=False)
    _wrapped: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        self.credentials = CredentialStore(self.db, self.config.services, self.check_dek)
        self.sessions = SessionStore(self.db)

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s services from now on (the daemon's reload); the key
        file and data dir it was opened with stay."""
        self.config = replace(config, data_dir=self.config.data_dir, key_file=self.config.key_file)
        self.credentials.services = config.services

    def meta(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else bytes(row[0])

    @property
    def initialised(self) -> bool:
        return self.meta("wrapped_dek") is not None

    @property
    def passphrase_mode(self) -> bool:
        return self.meta("kek_mode") == PASSPHRASE_MODE

    def _key_meta(self) -> dict[str, bytes]:
        return {str(key): bytes(value) for key, value in self.db.execute(_KEY_META_SQL)}

    def _kek_for(self, stored: dict[str, bytes]) -> bytes:
        if stored.get("kek_mode") == PASSPHRASE_MODE:
            params: dict[str, bytes | None] = {k: stored.get(k) for k in _KDF_KEYS}
            return kek_from_passphrase(get_passphrase(self.passphrase_file), params)
        return read_key_file(self.config.key_file)

    def unlock(self) -> bytes:
        """The data key, unwrapped by the key file or passphrase; cached for this process."""
        if self._dek is None:
            return self.unlock_with_kek().dek
        return self._dek

    def unlock_with_kek(self) -> UnlockedKey:
        """The data key and the key that unwraps it, read afresh (asks for a passphrase once)."""
        stored = self._key_meta()
        wrapped = stored.get("wrapped_dek")
        if wrapped is None:
            raise StorageError(
                f"the vault at {self.config.db_path} is not initialised; run: vaultd init"
            )
        kek = self._kek_for(stored)
        try:
            dek = crypto.unwrap_key(kek, wrapped)
        except CryptoError:
            if stored.get("kek_mode") == PASSPHRASE_MODE:
                what, name = "passphrase", "the passphrase"
            else:
                what, name = "key", str(self.config.key_file)
            raise CryptoError(
                f"wrong {what}: {name} does not open the vault at {self.config.db_path}"
            ) from None
        key = UnlockedKey(dek, kek, wrapped, stored.get("dek_id", b""))
        self.adopt_key(dek, key.wrapped, key.dek_id)
        return key

    def adopt_key(self, dek: bytes, wrapped: bytes, dek_id: bytes) -> None:
        """Cache a data key this process unwrapped or stored, with what names it in ``meta``."""
        self._dek, self._wrapped, self._dek_id = dek, wrapped, dek_id

    def _require_transaction(self) -> None:
        # Outside BEGIN IMMEDIATE another process could change meta between
        # the check and the write: the check would prove nothing.
        if not self.db.conn.in_transaction:
            raise RuntimeError("a data key check must run inside the write transaction")

    def check_dek(self, dek: bytes) -> None:
        """Refuse unless ``dek`` is still the vault's data key; run inside the write transaction.

        The guard of every write that seals with a cached key: a rekey that
        committed after the key was read would otherwise leave the new
        ciphertext under a key the vault no longer has, a credential that never
        opens again. Compares the id, not the wrapped bytes: passwd re-wraps the
        same key, and a daemon that keeps running after it must still write.
        """
        self._require_transaction()
        if self._dek is None or not hmac.compare_digest(dek, self._dek):
            raise CryptoError(
                "this is not the data key this vault was unlocked with; nothing was written"
            )
        if (self.meta("dek_id") or b"") != self._dek_id:
            raise CryptoError(DEK_CHANGED)

    def check_wrapped(self, wrapped: bytes) -> None:
        """Refuse unless the stored wrapped data key is byte for byte ``wrapped``.

        For writes that replace the wrapped key (passwd, rekey): wrapping uses
        a random nonce, so any passwd or rekey committed since ``wrapped`` was
        read has changed these bytes. Run inside the write transaction.
        """
        self._require_transaction()
        if self.meta("wrapped_dek") != wrapped:
            raise CryptoError(KEY_CHANGED)

    def close(self) -> None:
        self._dek, self._wrapped, self._dek_id = None, b"", b""
        self.db.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_files(config: Config) -> None:
    """Every verb's first check: nothing that holds vault material is open to others."""
    check_private(config.data_dir, "data directory")
    for suffix in ("", "-wal", "-shm"):
        check_private(Path(f"{config.db_path}{suffix}"), "database file")
    if config.key_file.exists():
        # Others who can list it learn of the key; who can write it can swap it.
        # Without a key file (passphrase mode) it holds nothing of the vault's.
        check_private(config.key_file.parent, "key directory")
    check_private(config.key_file, "key file")


def open_vault(config: Config, *, passphrase_file: Path | None = None) -> Vault:
    """An existing, initialised vault; nothing is created."""
    if not config.db_path.exists():
        raise StorageError(f"no vault at {config.db_path}; create one with: vaultd init")
    _check_files(config)
    vault = Vault(config, connect(config.db_path), passphrase_file=passphrase_file)
    if not vault.initialised:
        vault.close()
        raise StorageError(f"the vault at {config.db_path} is not initialised; run: vaultd init")
    return vault


def init_vault(
    config: Config, *, passphrase: bool = False, passphrase_file: Path | None = None
) -> tuple[Vault, bool]:
    """Create whatever is missing; return the unlocked vault and whether it was new.

    Order matters for crash safety: the key file is written (and synced) before
    the data key wrapped by it, so no crash leaves a vault with no key that opens it.
    With ``passphrase``, a new vault's data key is wrapped by a passphrase-derived
    key instead and no key file is made.
    """
    new_passphrase = None
    if passphrase and not config.db_path.exists():
        # Asked before anything is made: without a terminal or a file, a
        # failed init leaves nothing behind.
        new_passphrase = _new_vault_passphrase(passphrase_file)
    ensure_private_dir(config.data_dir, "data directory")
    _check_files(config)
    if not passphrase and not config.db_path.exists() and not config.key_file.exists():
        # Refuse an unsafe key directory before the database exists, so a
        # failed init leaves no half-made vault behind.
        ensure_private_dir(config.key_file.parent, "key directory")
    vault = Vault(config, connect(config.db_path, create=True), passphrase_file=passphrase_file)
    try:
        if vault.initialised:
            vault.unlock()  # an existing vault must open with the key we have
            return vault, False
        if passphrase:
            secret = new_passphrase or _new_vault_passphrase(passphrase_file)
            params = passphrase_params()
            kek = kek_from_passphrase(secret, dict(params))
            rows: list[tuple[str, bytes]] = [("kek_mode", PASSPHRASE_MODE), *params.items()]
            return _store_new_dek(vault, kek, rows)
        if not config.key_file.exists():
            ensure_private_dir(config.key_file.parent, "key directory")
            # A concurrent init may make it first: then that one is used.
            with contextlib.suppress(FileExistsError):
                create_private_file(config.key_file, crypto.new_key())
        kek = read_key_file(config.key_file)
        return _store_new_dek(vault, kek, [("kek_mode", KEYFILE_MODE)])
    except BaseException:
        vault.close()
        raise


def _new_vault_passphrase(passphrase_file: Path | None) -> bytes:
    return get_passphrase(
        passphrase_file,
        what="New vault passphrase",
        confirm=True,
        use_credentials=False,
        no_source="no terminal to ask for the new vault's passphrase on: give "
        "--passphrase-file FILE (a 0600 file, the passphrase its first line), "
        "or run vaultd init --passphrase on a terminal",
    )


def _store_new_dek(vault: Vault, kek: bytes, rows: list[tuple[str, bytes]]) -> tuple[Vault, bool]:
    dek = crypto.new_key()
    wrapped = crypto.wrap_key(kek, dek)
    dek_id = new_dek_id()
    try:
        with write_transaction(vault.db) as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format_version", FORMAT_VERSION),
                    *rows,
                    ("wrapped_dek", wrapped),
                    ("dek_id", dek_id),
                ],
            )
    except sqlite3.IntegrityError:
        # A concurrent init won the race; its data key is the vault's.
        vault.unlock()
        return vault, False
    vault.adopt_key(dek, wrapped, dek_id)
    return vault, True


def change_passphrase(vault: Vault, new_passphrase: bytes) -> None:
    """Re-wrap the data key under a new passphrase (new salt); credentials are untouched."""
    if not vault.passphrase_mode:
        raise CryptoError("this vault is opened by a key file, not a passphrase")
    dek = vault.unlock()
    read_wrapped = vault._wrapped
    params = passphrase_params()
    wrapped = crypto.wrap_key(kek_from_passphrase(new_passphrase, dict(params)), dek)
    # Salt, limits and wrapped key change together: a crash keeps the old passphrase.
    with write_transaction(vault.db) as conn:
        # A rekey since the unlock: the new passphrase would wrap a data key
        # nothing is sealed under any more, and no passphrase would open the vault.
        vault.check_dek(dek)
        # Another passwd since: it would be silently undone, its passphrase a lie.
        vault.check_wrapped(read_wrapped)
        conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(value, key) for key, value in [*params.items(), ("wrapped_dek", wrapped)]],
        )
    vault.adopt_key(dek, wrapped, vault._dek_id)
    # The data key wrapped by the old passphrase must not stay behind in the WAL.
    forget_replaced_pages(vault.db)
