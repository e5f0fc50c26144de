"""Sealing, wrapping and key derivation, tested the way PyNaCl tests ``SecretBox``.

Round trips over arbitrary bytes with Hypothesis; one flipped byte anywhere,
a truncation, a moved ciphertext or a wrong key must each fail with the one
``CryptoError`` (DESIGN 4).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import nacl.pwhash
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from vaultd import crypto
from vaultd.crypto import (
    KEY_SIZE,
    PASSPHRASE_SALT_SIZE,
    SEAL_VERSION,
    WRAP_VERSION,
    new_key,
    passphrase_kek,
    seal,
    unseal,
    unwrap_key,
    wrap_key,
)
from vaultd.errors import CryptoError

DEK = bytes(range(KEY_SIZE))
OTHER_DEK = bytes(range(1, KEY_SIZE + 1))
CRED_ID = "0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6"
SERVICE = "openai"
SECRET = b"sk-live-0123456789abcdefghijklmnop"

NONCE_SIZE = 24
MAC_SIZE = 16
OVERHEAD = len(SEAL_VERSION) + NONCE_SIZE + MAC_SIZE

# Cheap properties get a few hundred examples; no deadline because the first
# call into libsodium (and any CI hiccup) would otherwise flake.
FAST = settings(max_examples=200, deadline=None)

keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
credential_ids = st.uuids().map(str)
services = st.text(max_size=40)
plaintexts = st.binary(max_size=2048)
BAD_KEY_LENGTHS = [0, 16, 31, 33, 64]


def sealed_damage_message() -> str:
    """What ``unseal`` says about a damaged value: every damage must say the same."""
    with pytest.raises(CryptoError) as info:
        unseal(DEK, CRED_ID, SERVICE, b"")
    return str(info.value)


# -- seal / unseal -------------------------------------------------------------


@FAST
@given(dek=keys, credential_id=credential_ids, service=services, plaintext=plaintexts)
@example(dek=DEK, credential_id=CRED_ID, service=SERVICE, plaintext=b"")
@example(dek=DEK, credential_id=CRED_ID, service="", plaintext=b"\x00")
def test_seal_unseal_round_trip(
    dek: bytes, credential_id: str, service: str, plaintext: bytes
) -> None:
    sealed = seal(dek, credential_id, service, plaintext)
    assert len(sealed) == OVERHEAD + len(plaintext)
    assert unseal(dek, credential_id, service, sealed) == plaintext


def test_round_trip_of_a_large_plaintext() -> None:
    plaintext = os.urandom(4 << 20)
    assert unseal(DEK, CRED_ID, SERVICE, seal(DEK, CRED_ID, SERVICE, plaintext)) == plaintext


def test_sealed_value_starts_with_the_version_byte() -> None:
    assert seal(DEK, CRED_ID, SERVICE, SECRET)[:1] == SEAL_VERSION


def test_two_seals_of_the_same_plaintext_differ_by_a_fresh_nonce() -> None:
    first = seal(DEK, CRED_ID, SERVICE, SECRET)
    second = seal(DEK, CRED_ID, SERVICE, SECRET)
    assert first != second
    assert first[1 : 1 + NONCE_SIZE] != second[1 : 1 + NONCE_SIZE]
    assert unseal(DEK, CRED_ID, SERVICE, first) == unseal(DEK, CRED_ID, SERVICE, second)


@FAST
@given(plaintext=st.binary(min_size=8, max_size=512))
@example(plaintext=SECRET)
@example(plaintext=b"\x00" * 64)
def test_plaintext_never_appears_in_the_sealed_value(plaintext: bytes) -> None:
    assert plaintext not in seal(DEK, CRED_ID, SERVICE, plaintext)


# The layout after the version byte is PyNaCl's: nonce, then MAC, then ciphertext.
REGIONS = {
    "version": (0, 1),
    "nonce": (1, 1 + NONCE_SIZE),
    "mac": (1 + NONCE_SIZE, OVERHEAD),
    "ciphertext": (OVERHEAD, None),
}


@pytest.mark.parametrize("region", list(REGIONS))
@FAST
@given(plaintext=st.binary(min_size=1, max_size=256), data=st.data())
def test_flipping_any_byte_fails(region: str, plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal(DEK, CRED_ID, SERVICE, plaintext)
    start, end = REGIONS[region]
    index = data.draw(st.integers(start, (len(sealed) if end is None else end) - 1), "index")
    mask = data.draw(st.integers(1, 255), "mask")
    tampered = bytearray(sealed)
    tampered[index] ^= mask
    with pytest.raises(CryptoError) as info:
        unseal(DEK, CRED_ID, SERVICE, bytes(tampered))
    assert type(info.value) is CryptoError
    assert str(info.value) == sealed_damage_message()


@FAST
@given(plaintext=st.binary(max_size=256), data=st.data())
def test_truncated_sealed_value_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal(DEK, CRED_ID, SERVICE, plaintext)
    keep = data.draw(st.integers(0, len(sealed) - 1), "keep")
    with pytest.raises(CryptoError) as info:
        unseal(DEK, CRED_ID, SERVICE, sealed[:keep])
    assert str(info.value) == sealed_damage_message()


@FAST
@given(plaintext=st.binary(max_size=256), data=st.data())
def test_sealed_value_missing_its_head_or_with_a_tail_fails(
    plaintext: bytes, data: st.DataObject
) -> None:
    sealed = seal(DEK, CRED_ID, SERVICE, plaintext)
    drop = data.draw(st.integers(1, len(sealed)), "drop")
    tail = data.draw(st.binary(min_size=1, max_size=32), "tail")
    with pytest.raises(CryptoError):
        unseal(DEK, CRED_ID, SERVICE, sealed[drop:])
    with pytest.raises(CryptoError):
        unseal(DEK, CRED_ID, SERVICE, sealed + tail)


@FAST
@given(first=st.uuids(), second=st.uuids())
def test_ciphertext_moved_to_another_credential_id_fails(
    first: uuid.UUID, second: uuid.UUID
) -> None:
    assume(first != second)
    sealed = seal(DEK, str(first), SERVICE, SECRET)
    with pytest.raises(CryptoError) as info:
        unseal(DEK, str(second), SERVICE, sealed)
    assert str(info.value) == sealed_damage_message()


@FAST
@given(first=services, second=services)
@example(first="openai", second="OpenAI")
@example(first="openai", second="openai ")
@example(first="", second="\x00")
def test_ciphertext_under_another_service_fails(first: str, second: str) -> None:
    assume(first != second)
    sealed = seal(DEK, CRED_ID, first, SECRET)
    with pytest.raises(CryptoError) as info:
        unseal(DEK, CRED_ID, second, sealed)
    assert str(info.value) == sealed_damage_message()


@FAST
@given(right=keys, wrong=keys)
def test_unseal_with_a_wrong_data_key_fails(right: bytes, wrong: bytes) -> None:
    assume(right != wrong)
    sealed = seal(right, CRED_ID, SERVICE, SECRET)
    with pytest.raises(CryptoError) as info:
        unseal(wrong, CRED_ID, SERVICE, sealed)
    assert str(info.value) == sealed_damage_message()


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", "1234", CRED_ID + "0", CRED_ID[:-1]])
def test_seal_and_unseal_refuse_a_credential_id_that_is_not_a_uuid(bad_id: str) -> None:
    with pytest.raises(CryptoError, match="UUID"):
        seal(DEK, bad_id, SERVICE, SECRET)
    sealed = seal(DEK, CRED_ID, SERVICE, SECRET)
    with pytest.raises(CryptoError, match="UUID"):
        unseal(DEK, bad_id, SERVICE, sealed)


# -- wrap_key / unwrap_key -------------------------------------------------------


@FAST
@given(kek=keys, dek=keys)
def test_wrap_unwrap_round_trip(kek: bytes, dek: bytes) -> None:
    wrapped = wrap_key(kek, dek)
    assert wrapped[:1] == WRAP_VERSION
    assert dek not in wrapped
    assert unwrap_key(kek, wrapped) == dek


def test_two_wraps_of_the_same_key_differ() -> None:
    assert wrap_key(DEK, OTHER_DEK) != wrap_key(DEK, OTHER_DEK)


@FAST
@given(right=keys, wrong=keys)
def test_unwrap_with_a_wrong_key_says_wrong_key(right: bytes, wrong: bytes) -> None:
    assume(right != wrong)
    wrapped = wrap_key(right, DEK)
    with pytest.raises(CryptoError, match="wrong key"):
        unwrap_key(wrong, wrapped)


@FAST
@given(data=st.data())
def test_flipping_any_byte_of_a_wrapped_key_fails(data: st.DataObject) -> None:
    wrapped = wrap_key(DEK, OTHER_DEK)
    index = data.draw(st.integers(0, len(wrapped) - 1), "index")
    mask = data.draw(st.integers(1, 255), "mask")
    tampered = bytearray(wrapped)
    tampered[index] ^= mask
    with pytest.raises(CryptoError) as info:
        unwrap_key(DEK, bytes(tampered))
    assert type(info.value) is CryptoError


@FAST
@given(data=st.data())
def test_truncated_wrapped_key_fails(data: st.DataObject) -> None:
    wrapped = wrap_key(DEK, OTHER_DEK)
    keep = data.draw(st.integers(0, len(wrapped) - 1), "keep")
    with pytest.raises(CryptoError):
        unwrap_key(DEK, wrapped[:keep])


# -- key lengths -------------------------------------------------------------------

KEYED_CALLS: dict[str, Callable[[bytes], object]] = {
    "seal": lambda key: seal(key, CRED_ID, SERVICE, SECRET),
    "unseal": lambda key: unseal(key, CRED_ID, SERVICE, seal(DEK, CRED_ID, SERVICE, SECRET)),
    "wrap_key (kek)": lambda key: wrap_key(key, DEK),
    "wrap_key (dek)": lambda key: wrap_key(DEK, key),
    "unwrap_key": lambda key: unwrap_key(key, wrap_key(DEK, OTHER_DEK)),
}


@pytest.mark.parametrize("length", BAD_KEY_LENGTHS)
@pytest.mark.parametrize("call", list(KEYED_CALLS))
def test_keys_of_the_wrong_length_are_refused(call: str, length: int) -> None:
    with pytest.raises(CryptoError, match=f"exactly {KEY_SIZE} bytes"):
        KEYED_CALLS[call](b"k" * length)


@pytest.mark.parametrize("call", list(KEYED_CALLS))
def test_the_same_calls_succeed_with_a_key_of_the_right_length(call: str) -> None:
    # The control for the test above: only the length made those calls fail.
    KEYED_CALLS[call](DEK)


def test_new_key_is_32_fresh_random_bytes() -> None:
    first, second = new_key(), new_key()
    assert isinstance(first, bytes)
    assert len(first) == len(second) == KEY_SIZE
    assert first != second


# -- passphrase KEK ------------------------------------------------------------------

OPS = nacl.pwhash.argon2id.OPSLIMIT_MIN
MEM = nacl.pwhash.argon2id.MEMLIMIT_MIN
SALT = b"s" * PASSPHRASE_SALT_SIZE


def test_passphrase_kek_is_deterministic_for_the_same_salt_and_parameters() -> None:
    first = passphrase_kek(b"correct horse", SALT, OPS, MEM)
    assert len(first) == KEY_SIZE
    assert passphrase_kek(b"correct horse", SALT, OPS, MEM) == first
    # And it is usable as a KEK.
    assert unwrap_key(first, wrap_key(first, DEK)) == DEK


def test_passphrase_kek_depends_on_salt_passphrase_and_parameters() -> None:
    base = passphrase_kek(b"correct horse", SALT, OPS, MEM)
    other_salt = b"t" * PASSPHRASE_SALT_SIZE
    assert passphrase_kek(b"correct horse", other_salt, OPS, MEM) != base
    assert passphrase_kek(b"correct horsf", SALT, OPS, MEM) != base
    assert passphrase_kek(b"correct horse", SALT, OPS + 1, MEM) != base


@pytest.mark.parametrize(
    "length", [0, PASSPHRASE_SALT_SIZE - 1, PASSPHRASE_SALT_SIZE + 1, KEY_SIZE]
)
def test_passphrase_salt_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(CryptoError, match="salt"):
        passphrase_kek(b"correct horse", b"s" * length, OPS, MEM)


def test_passphrase_parameters_below_the_minimum_are_refused() -> None:
    with pytest.raises(CryptoError):
        passphrase_kek(b"correct horse", SALT, 0, MEM)


def test_stored_passphrase_defaults_are_argon2id_moderate() -> None:
    # DESIGN 4: MODERATE, not INTERACTIVE/MIN (the tests use MIN only for speed).
    assert crypto.PASSPHRASE_OPSLIMIT == nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    assert crypto.PASSPHRASE_MEMLIMIT == nacl.pwhash.argon2id.MEMLIMIT_MODERATE
