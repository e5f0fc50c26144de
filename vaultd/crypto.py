"""Sealing and opening secrets (libsodium through PyNaCl).

Layout, per DESIGN 4:

* one random 32-byte data key (DEK) per vault, stored only wrapped by the key
  encryption key (KEK): ``WRAP_VERSION || SecretBox(KEK).encrypt(DEK)``;
* each credential sealed under its own subkey, a keyed BLAKE2b of the DEK
  bound to the credential's id and service, so a ciphertext copied to another
  row, or a row whose service was edited, fails to open:
  ``SEAL_VERSION || nonce(24) || XSalsa20-Poly1305 ciphertext``.

The surface is ``seal`` / ``unseal`` and ``wrap_key`` / ``unwrap_key``; every
failure is the one ``CryptoError``, whatever check failed.
"""

from __future__ import annotations

import uuid

import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.encoding import RawEncoder

from vaultd.errors import CryptoError

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
WRAP_VERSION = b"\x01"
SEAL_VERSION = b"\x01"
# BLAKE2b personalisation is at most 16 bytes: a fixed domain tag. The
# credential's id (16 bytes) goes in the salt, its service in the message.
_SUBKEY_PERSON = b"vaultd.cred.v1\x00\x00"
_MIN_SEALED = 1 + nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES

PASSPHRASE_SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES
PASSPHRASE_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
PASSPHRASE_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE


def new_key() -> bytes:
    """32 bytes from the operating system's CSPRNG (libsodium ``randombytes``)."""
    return bytes(nacl.utils.random(KEY_SIZE))


def _box(key: bytes) -> nacl.secret.SecretBox:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise CryptoError(f"a key must be exactly {KEY_SIZE} bytes")
    return nacl.secret.SecretBox(key)


def wrap_key(kek: bytes, dek: bytes) -> bytes:
    if not isinstance(dek, bytes) or len(dek) != KEY_SIZE:
        raise CryptoError(f"a data key must be exactly {KEY_SIZE} bytes")
    return WRAP_VERSION + bytes(_box(kek).encrypt(dek))


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """The DEK, or ``CryptoError`` if ``kek`` is not the key that wrapped it."""
    box = _box(kek)
    if not wrapped.startswith(WRAP_VERSION):
        raise CryptoError("the wrapped data key has an unknown format")
    try:
        dek = bytes(box.decrypt(wrapped[1:]))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise CryptoError("wrong key: it does not open this vault") from None
    if len(dek) != KEY_SIZE:
        raise CryptoError("wrong key: it does not open this vault")
    return dek


def _subkey(dek: bytes, credential_id: str, service: str) -> bytes:
    if not isinstance(dek, bytes) or len(dek) != KEY_SIZE:
        raise CryptoError(f"a data key must be exactly {KEY_SIZE} bytes")
    try:
        salt = uuid.UUID(credential_id).bytes
    except (ValueError, AttributeError, TypeError):
        raise CryptoError("a credential id must be a UUID") from None
    return bytes(
        nacl.hash.blake2b(
            service.encode("utf-8"),
            digest_size=KEY_SIZE,
            key=dek,
            salt=salt,
            person=_SUBKEY_PERSON,
            encoder=RawEncoder,
        )
    )


def seal(dek: bytes, credential_id: str, service: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` for this credential; a fresh random nonce each call."""
    box = _box(_subkey(dek, credential_id, service))
    return SEAL_VERSION + bytes(box.encrypt(plaintext))


def unseal(dek: bytes, credential_id: str, service: str, sealed: bytes) -> bytes:
    """The plaintext, or ``CryptoError`` for any tampering, move, or wrong key."""
    if not isinstance(sealed, bytes) or len(sealed) < _MIN_SEALED:
        raise CryptoError("the sealed value is damaged")
    if sealed[:1] != SEAL_VERSION:
        raise CryptoError("the sealed value is damaged")
    box = _box(_subkey(dek, credential_id, service))
    try:
        return bytes(box.decrypt(sealed[1:]))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise CryptoError("the sealed value is damaged") from None


def passphrase_kek(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """The KEK derived from a passphrase with Argon2id (parameters stored in the vault)."""
    if len(salt) != PASSPHRASE_SALT_SIZE:
        raise CryptoError("the stored passphrase salt is damaged")
    try:
        return bytes(
            nacl.pwhash.argon2id.kdf(
                KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
            )
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise CryptoError("the stored passphrase parameters are damaged") from None
