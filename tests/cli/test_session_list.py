"""Issue 17, item 10: `session list` shows the sessions in use; `revoke` takes the key prefix."""

from __future__ import annotations

import json
from typing import Any

from tests.support.cli import CLI
from vaultd.models import now


def listed(cli: CLI, *flags: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(cli.ok("session", "list", "--json", *flags).stdout)
    return items


def make(cli: CLI, name: str) -> tuple[str, str]:
    """A new session's token and id, as `session create` and `session list` show them."""
    token = cli.ok("session", "create", "--name", name).stdout.strip()
    (found,) = [s for s in listed(cli, "--all") if s["key_prefix"] == token[:12]]
    return token, found["id"]


def test_list_shows_active_sessions_and_all_shows_every_one(initialised: CLI) -> None:
    _, keep_id = make(initialised, "in-use")
    _, revoked_id = make(initialised, "run: python")
    _, expired_id = make(initialised, "old")
    initialised.ok("session", "revoke", revoked_id)
    with initialised.vault() as vault:  # an hour later, for the third
        vault.db.execute("UPDATE sessions SET expires_at = ? WHERE id = ?", [now() - 1, expired_id])
        vault.db.conn.commit()

    assert [s["id"] for s in listed(initialised)] == [keep_id]
    table = initialised.ok("session", "list").stdout
    assert "in-use" in table and "run: python" not in table and "old" not in table
    every = {s["id"]: s["status"] for s in listed(initialised, "--all")}
    assert every == {keep_id: "active", revoked_id: "revoked", expired_id: "expired"}
    assert "revoked" in initialised.ok("session", "list", "--all").stdout

    initialised.ok("session", "revoke", keep_id)
    result = initialised.ok("session", "list")
    assert result.stdout == ""
    assert (
        result.stderr.strip()
        == "no active sessions (3 revoked or expired: vaultd session list --all)"
    )


def test_revoke_takes_the_key_prefix_the_list_shows(initialised: CLI) -> None:
    token, session_id = make(initialised, "script")
    other_token, other_id = make(initialised, "other")
    prefix = next(s["key_prefix"] for s in listed(initialised) if s["id"] == session_id)
    assert prefix == token[:12] and prefix.startswith("fn_sess_")

    result = initialised.ok("session", "revoke", prefix)
    assert result.stderr.strip() == f"revoked session {session_id} (script)"
    assert [s["id"] for s in listed(initialised)] == [other_id]
    with initialised.vault() as vault:
        assert vault.sessions.get(session_id).status() == "revoked"
        assert vault.sessions.get(other_id).status() == "active"
    # The whole token too (a leaked one), never repeated in what is printed.
    result = initialised.ok("session", "revoke", other_token)
    assert other_token not in result.output and other_id in result.stderr
    assert listed(initialised) == []


def test_key_prefix_mistakes_are_one_line_without_the_token(initialised: CLI) -> None:
    token, session_id = make(initialised, "a")
    _, twin_id = make(initialised, "b")
    with initialised.vault() as vault:  # 24 random bits: two sessions can share a prefix
        vault.db.execute("UPDATE sessions SET key_prefix = ? WHERE id = ?", [token[:12], twin_id])
        vault.db.conn.commit()
    line = initialised.fails("session", "revoke", token[:12])
    assert line.startswith(f"Error: '{token[:12]}' is the key prefix of 2 sessions")
    assert session_id in line and twin_id in line and line.endswith("give the id")
    assert "is the key prefix of 2 sessions" in initialised.fails("session", "revoke", "fn_sess_")

    assert initialised.fails("session", "revoke", "fn_sess_zzzz") == (
        "Error: no session with key prefix 'fn_sess_zzzz'"
    )
    mistyped = token[:-1] + "!"
    line = initialised.fails("session", "revoke", mistyped)
    assert token[12:20] not in line
    assert line == (
        "Error: that is neither a session's key prefix (12 characters) nor a whole token"
    )
    unknown = "fn_sess_" + "A" * 43
    assert initialised.fails("session", "revoke", unknown) == "Error: no session has that token"
    # Nothing was revoked by any of these.
    assert {s["id"] for s in listed(initialised)} == {session_id, twin_id}
