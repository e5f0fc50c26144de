"""The credential store itself, below the CLI and the API: what each call promises."""

from __future__ import annotations

import sqlite3

import pytest

from vaultd import crypto
from vaultd.core.vault import Vault
from vaultd.errors import (
    AmbiguousReference,
    Conflict,
    CryptoError,
    NotFound,
    ValidationError,
)

FIRST = "sk-proj-FIRSTkeyFIRSTkey0001"
SECOND = "sk-proj-SECONDkeySECONDkey0002"


def test_the_first_key_of_a_service_is_its_default(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    first = opened_vault.credentials.add(dek, service="openai", name="a", secret=FIRST)
    second = opened_vault.credentials.add(dek, service="openai", name="b", secret=SECOND)
    assert (first.is_default, second.is_default) == (True, False)
    assert opened_vault.credentials.default_for("openai") == first
    assert [c.name for c in opened_vault.credentials.list()] == ["a", "b"]  # oldest first


def test_a_stored_secret_opens_only_with_the_vaults_key(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    stored = opened_vault.credentials.add(dek, service="openai", name="a", secret=FIRST)
    assert opened_vault.credentials.reveal(dek, stored) == FIRST
    assert stored.hint is not None and FIRST not in stored.hint
    with pytest.raises(CryptoError, match="failed to open"):
        opened_vault.credentials.reveal(crypto.new_key(), stored)


def test_references_by_name_id_and_prefix(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    made = [
        opened_vault.credentials.add(dek, service="openai", name=f"k{i}", secret=f"{FIRST}{i}")
        for i in range(3)
    ]
    store = opened_vault.credentials
    assert store.resolve("openai/k1") == made[1]
    assert store.resolve(made[2].id) == made[2]
    # The shortest prefix no other id shares: ids made in the same millisecond
    # count up, so they may differ only in their last character.
    unique = next(
        made[0].id[:n]
        for n in range(4, len(made[0].id) + 1)
        if not any(other.id.startswith(made[0].id[:n]) for other in made[1:])
    )
    assert store.resolve(unique.upper()) == made[0]  # any case
    # Ids made in the same millisecond share their first characters.
    with pytest.raises(AmbiguousReference) as ambiguous:
        store.resolve(made[0].id[:4])
    assert ambiguous.value.status == 409
    for missing in ("openai/nope", "ffffffff", "not an id"):
        with pytest.raises(NotFound):
            store.resolve(missing)


def test_a_taken_name_is_a_conflict_that_names_the_holder(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    held = opened_vault.credentials.add(dek, service="openai", name="a", secret=FIRST)
    with pytest.raises(Conflict) as taken:
        opened_vault.credentials.add(dek, service="openai", name="a", secret=SECOND)
    assert taken.value.conflicting_resource_id == held.id
    assert opened_vault.credentials.reveal(dek, held) == FIRST  # nothing replaced


def test_every_bad_field_is_named_and_nothing_is_written(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    with pytest.raises(ValidationError) as bad:
        opened_vault.credentials.add(
            dek, service="nosuch", name="", secret="", metadata={"k": 1}, expires_at="soon"
        )
    pointers = [e.pointer for e in bad.value.errors]
    assert pointers == ["/service", "/name", "/secret", "/metadata/k", "/expires_at"]
    assert FIRST not in str(bad.value)
    assert opened_vault.credentials.list() == []


def test_update_moves_the_default_and_rotates_the_secret(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    store = opened_vault.credentials
    first = store.add(dek, service="openai", name="a", secret=FIRST)
    second = store.add(dek, service="openai", name="b", secret=SECOND)
    store.update(second.id, is_default=True)
    assert store.default_for("openai") == store.get(second.id)
    assert not store.get(first.id).is_default
    rotated = store.update(first.id, dek=dek, secret=SECOND + "x")
    assert store.reveal(dek, rotated) == SECOND + "x"
    assert rotated.id == first.id and rotated.hint != first.hint
    with pytest.raises(CryptoError, match="needs the vault key"):
        store.update(first.id, secret="sk-new-secret-0000000")
    with pytest.raises(ValidationError):
        store.update(first.id, is_default="yes")


def test_paging_by_the_last_id_seen(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    store = opened_vault.credentials
    ids = [
        store.add(dek, service="github", name=f"g{i}", secret=f"ghp_{i:030d}").id for i in range(5)
    ]
    page = store.list(limit=2)
    assert [c.id for c in page] == ids[:2]
    assert [c.id for c in store.list(limit=2, starting_after=page[-1].id)] == ids[2:4]
    with pytest.raises(ValidationError, match="starting_after"):
        store.list(starting_after="01234567-89ab-7def-8123-456789abcdef")


def test_delete_removes_the_row_and_its_sealed_secret(opened_vault: Vault) -> None:
    dek = opened_vault.unlock()
    store = opened_vault.credentials
    gone = store.add(dek, service="openai", name="a", secret=FIRST)
    assert store.delete(gone.id) == gone
    with pytest.raises(NotFound):
        store.get(gone.id)
    with pytest.raises(NotFound):
        store.reveal(dek, gone)
    rows = sqlite3.connect(opened_vault.config.db_path).execute("SELECT count(*) FROM credentials")
    assert rows.fetchone()[0] == 0
