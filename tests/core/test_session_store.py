"""The session store itself: tokens minted, checked by hash only, revoked, expired."""

from __future__ import annotations

import sqlite3

import pytest

from vaultd.core.vault import Vault
from vaultd.errors import (
    AmbiguousReference,
    NotFound,
    StorageError,
    Unauthorized,
    ValidationError,
)
from vaultd.models import now
from vaultd.store.db import write_transaction
from vaultd.tokens import KEY_PREFIX_LEN, TOKEN_RE, token_hash


def create(vault: Vault, **kw: object) -> tuple[str, str]:
    args: dict[str, object] = {"name": "t", "scopes": ["proxy"], "services": ["*"], "ttl": 3600}
    args.update(kw)
    session, token = vault.sessions.create(known_services=vault.config.services, **args)  # type: ignore[arg-type]
    return session.id, token


def test_a_token_is_shown_once_and_stored_only_as_its_hash(opened_vault: Vault) -> None:
    session_id, token = create(opened_vault)
    assert TOKEN_RE.fullmatch(token)
    session = opened_vault.sessions.get(session_id)
    assert session.key_prefix == token[:KEY_PREFIX_LEN]
    raw = opened_vault.config.db_path.read_bytes()
    assert token.encode() not in raw
    row = sqlite3.connect(opened_vault.config.db_path).execute(
        "SELECT token_hash FROM sessions WHERE id = ?", [session_id]
    )
    assert row.fetchone()[0] == token_hash(token)
    assert opened_vault.sessions.authenticate(token).id == session_id


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "missing or malformed"),
        ("fn_sess_short", "missing or malformed"),
        ("fn_sess_" + "A" * 43, "not valid"),
    ],
)
def test_tokens_that_are_not_a_sessions_are_refused(
    opened_vault: Vault, token: str, reason: str
) -> None:
    with pytest.raises(Unauthorized, match=reason):
        opened_vault.sessions.authenticate(token)


def test_revoked_and_expired_tokens_are_refused(opened_vault: Vault) -> None:
    revoked_id, revoked = create(opened_vault)
    first = opened_vault.sessions.revoke(revoked_id).revoked_at
    assert opened_vault.sessions.revoke(revoked_id).revoked_at == first  # revoking again keeps it
    with pytest.raises(Unauthorized, match="the token is revoked"):
        opened_vault.sessions.authenticate(revoked)
    expired_id, expired = create(opened_vault, ttl=60)
    with sqlite3.connect(opened_vault.config.db_path) as conn:
        conn.execute("UPDATE sessions SET expires_at = 1 WHERE id = ?", [expired_id])
    with pytest.raises(Unauthorized, match="the token is expired"):
        opened_vault.sessions.authenticate(expired)
    never_id, never = create(opened_vault, ttl=None)
    assert opened_vault.sessions.get(never_id).expires_at is None
    assert opened_vault.sessions.authenticate(never).status() == "active"


def test_bad_scopes_and_unknown_services_are_named_together(opened_vault: Vault) -> None:
    with pytest.raises(ValidationError) as bad:
        create(opened_vault, scopes=["root"], services=["nosuch"], name="")
    assert [e.pointer for e in bad.value.errors] == ["/name", "/scopes/0", "/services/0"]
    assert opened_vault.sessions.list() == []


def test_sessions_by_id_prefix(opened_vault: Vault) -> None:
    ids = [create(opened_vault)[0] for _ in range(3)]
    assert opened_vault.sessions.resolve(ids[1]).id == ids[1]
    with pytest.raises(AmbiguousReference) as ambiguous:
        opened_vault.sessions.resolve(ids[0][:4])
    assert ambiguous.value.status == 409  # as for credentials
    with pytest.raises(NotFound):
        opened_vault.sessions.resolve("ffff")


POLICY = {"allow": ["POST /v1/chat/completions"], "models": ["gpt-4o-mini"]}


def test_a_policy_is_stored_normalised_and_read_back(opened_vault: Vault) -> None:
    _id, token = create(opened_vault, policy={**POLICY, "deny": ["delete /**"]})
    session = opened_vault.sessions.authenticate(token)
    assert session.policy is not None
    assert session.to_json()["policy"] == {
        "allow": ["POST /v1/chat/completions"],
        "deny": ["DELETE /**"],
        "models": ["gpt-4o-mini"],
        "credential": None,
    }
    # An empty policy is none at all.
    other, _ = create(opened_vault, policy={"allow": [], "models": None})
    assert opened_vault.sessions.get(other).policy is None


def test_update_checks_limits_and_policy_before_writing_either(opened_vault: Vault) -> None:
    session_id, _ = create(opened_vault, policy=POLICY, limits={"max_requests": 5})
    with pytest.raises(ValidationError) as refused:
        opened_vault.sessions.update(
            session_id, limits={"max_requests": 9}, policy={"allow": ["GET"]}
        )
    assert [e.pointer for e in refused.value.errors] == ["/policy/allow/0"]
    kept = opened_vault.sessions.get(session_id)
    assert kept.limits == {"max_requests": 5}
    assert kept.policy is not None and kept.policy.to_json()["allow"] == POLICY["allow"]
    changed = opened_vault.sessions.update(session_id, policy=None)
    assert changed.policy is None and changed.limits == {"max_requests": 5}


@pytest.mark.parametrize(
    "damage",
    ['{"allow": ["GET"]}', '{"nope": 1}', "[]", "not json", '{"allow": []}'],
)
def test_a_damaged_stored_policy_fails_closed(opened_vault: Vault, damage: str) -> None:
    # Read as "no policy", a damaged one would let the token do all it forbids.
    session_id, token = create(opened_vault, policy=POLICY)
    conn = sqlite3.connect(opened_vault.config.db_path)
    with conn:
        conn.execute("UPDATE sessions SET policy = ? WHERE id = ?", [damage, session_id])
    conn.close()
    with pytest.raises(StorageError, match="is damaged: its policy"):
        opened_vault.sessions.authenticate(token)


def test_extend_moves_a_lease_on_but_never_past_its_cap_nor_back(opened_vault: Vault) -> None:
    sessions = opened_vault.sessions
    session_id, token = create(opened_vault, ttl=60)
    created = sessions.get(session_id)
    assert created.expires_at is not None
    start = created.expires_at
    assert sessions.extend(session_id, start + 100).expires_at == start + 100
    # Only ever later: an earlier end is not written.
    assert sessions.extend(session_id, start + 10).expires_at == start + 100
    # Never past the cap (vaultd run --ttl).
    assert sessions.extend(session_id, start + 500, cap=start + 200).expires_at == start + 200
    assert sessions.extend(session_id, start + 900, cap=start + 200).expires_at == start + 200
    assert sessions.authenticate(token).id == session_id


def test_extend_never_brings_back_a_revoked_session(opened_vault: Vault) -> None:
    sessions = opened_vault.sessions
    session_id, token = create(opened_vault, ttl=60)
    before = sessions.revoke(session_id)
    after = sessions.extend(session_id, now() + 3600)
    assert after.expires_at == before.expires_at and after.revoked_at is not None
    with pytest.raises(Unauthorized, match="revoked"):
        sessions.authenticate(token)


def test_extend_leaves_a_session_that_never_expires_as_it_is(opened_vault: Vault) -> None:
    session_id, _token = create(opened_vault, ttl=None)
    assert opened_vault.sessions.extend(session_id, now() + 60).expires_at is None


def lapse(vault: Vault, session_id: str) -> None:
    with write_transaction(vault.db) as conn:
        conn.execute("UPDATE sessions SET expires_at = ? WHERE id = ?", [now() - 10, session_id])


def test_extend_takes_up_a_lapsed_lease_of_its_live_holder(opened_vault: Vault) -> None:
    """A suspended laptop: the lease ran out while `vaultd run` could not renew it."""
    sessions = opened_vault.sessions
    session_id, token = create(opened_vault, ttl=60)
    lapse(opened_vault, session_id)
    with pytest.raises(Unauthorized, match="expired"):
        sessions.authenticate(token)
    sessions.extend(session_id, now() + 60)
    assert sessions.authenticate(token).id == session_id
    # ... but not past its cap, which a lapsed one may already have reached.
    lapse(opened_vault, session_id)
    sessions.extend(session_id, now() + 60, cap=now() - 5)
    with pytest.raises(Unauthorized, match="expired"):
        sessions.authenticate(token)


def test_extend_of_a_session_that_is_gone_is_not_found(opened_vault: Vault) -> None:
    with pytest.raises(NotFound):
        opened_vault.sessions.extend("01a2b3c4-0000-7000-8000-000000000000", now() + 60)
