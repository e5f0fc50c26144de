"""``vaultd session``: minting, listing and revoking the tokens local tools hold."""

from __future__ import annotations

from typing import Any

import click

from vaultd.cli.common import (
    State,
    json_option,
    one_line_errors,
    opened,
    pass_state,
    ttl_option,
)
from vaultd.cli.limits import (
    SESSION_FLAGS,
    changed_limits,
    chosen_limits,
    limits_text,
    session_limit_options,
    used_text,
)
from vaultd.cli.output import emit_json, listing
from vaultd.cli.policy import chosen_policy, policy_options, policy_text
from vaultd.core.sessions import ALL_SERVICES, DEFAULT_SCOPES, SCOPES
from vaultd.models import now
from vaultd.units import format_ago


@click.group()
def session() -> None:
    """Tokens that local tools use instead of keys."""


@session.command(name="create")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@click.option("--service", "services_", multiple=True, help="Allowed service (default all).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help="Scope (repeatable; default read and proxy).",
)
@click.option("--ttl", help='Lifetime such as "8h" or "never" [default: [sessions] default_ttl].')
@session_limit_options
@policy_options
@pass_state
@one_line_errors
def session_create(
    state: State,
    /,
    name: str,
    services_: tuple[str, ...],
    scopes: tuple[str, ...],
    ttl: str | None,
    **flags: Any,
) -> None:
    """Mint a token; only the token goes to stdout, for TOKEN=$(vaultd session create).

    A policy (--allow, --deny, --read-only, --model, --credential, --policy)
    limits what the token may do; a request it refuses gets a 403 problem and
    never goes upstream.
    """
    config = state.config
    limits = chosen_limits(flags, SESSION_FLAGS)
    policy = chosen_policy(config, flags)
    lifetime = config.default_ttl if ttl is None else ttl_option(ttl, config)
    with opened(state) as vault:
        created, token = vault.sessions.create(
            name=name,
            scopes=list(scopes) or list(DEFAULT_SCOPES),
            services=list(services_) or [ALL_SERVICES],
            ttl=lifetime,
            known_services=config.services,
            limits=limits or None,
            policy=None if policy is None else policy.to_json(),
        )
    expires = "never" if created.expires_at is None else format_ago(created.expires_at, now())
    click.echo(
        f"session {created.id} ({created.name}): scopes {', '.join(created.scopes)}; "
        f"services {', '.join(created.services)}; expires {expires}; "
        f"limits {limits_text(created.limits)}; policy {policy_text(created.policy)}",
        err=True,
    )
    click.echo(token)


@session.command(name="list")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Revoked and expired ones too (kept for [sessions] keep, 7 days by default).",
)
@json_option
@pass_state
@one_line_errors
def session_list(state: State, show_all: bool, as_json: bool) -> None:
    """List active sessions (never their tokens); --all for every one kept."""
    at = now()
    with opened(state) as vault:
        sessions = vault.sessions.list()
    shown = sessions if show_all else [s for s in sessions if s.status(at) == "active"]
    ended = len(sessions) - len(shown)
    listing(
        shown,
        as_json=as_json,
        empty=(
            f"no active sessions ({ended} revoked or expired: vaultd session list --all)"
            if ended
            else "no sessions; create one with: vaultd session create"
        ),
        headers=[
            "ID",
            "NAME",
            "PREFIX",
            "SCOPES",
            "SERVICES",
            "STATUS",
            "LAST USED",
            "EXPIRES",
            "USED",
        ],
        row=lambda s, at: [
            s.id,
            s.name,
            s.key_prefix,
            ",".join(s.scopes),
            ",".join(s.services),
            s.status(at),
            format_ago(s.last_used_at, at),
            "never" if s.expires_at is None else format_ago(s.expires_at, at),
            used_text(s.used, s.limits),
        ],
    )


@session.command(name="limit")
@click.argument("session_id")
@session_limit_options
@click.option("--clear", is_flag=True, help="Remove every limit first.")
@json_option
@pass_state
@one_line_errors
def session_limit(
    state: State, /, session_id: str, clear: bool, as_json: bool, **limit_flags: str | None
) -> None:
    """Set limits of a session (by id or unique id prefix); the others stay unless --clear.

    What it has used so far stays counted. The daemon applies the change to
    its next request.
    """
    apply = changed_limits(limit_flags, SESSION_FLAGS, clear=clear)
    with opened(state) as vault:
        found = vault.sessions.resolve(session_id)
        updated = vault.sessions.set_limits(found.id, apply(found.limits))
    if as_json:
        emit_json(updated.to_json())
    else:
        click.echo(
            f"session {updated.id} ({updated.name}): limits {limits_text(updated.limits)}; "
            f"used {used_text(updated.used, updated.limits)}"
        )


@session.command(name="policy")
@click.argument("session_id")
@policy_options
@click.option("--clear", is_flag=True, help="Remove the policy (the flags then set a new one).")
@json_option
@pass_state
@one_line_errors
def session_policy(
    state: State, /, session_id: str, clear: bool, as_json: bool, **flags: Any
) -> None:
    """Show or set the policy of a session (by id or unique id prefix).

    The flags add to its policy (--credential replaces its credential);
    --clear starts from none. Without flags, it is shown. The daemon applies
    a change to its next request.
    """
    given = any(flags.get(name) for name in ("allow", "deny", "read_only", "models", "credential"))
    with opened(state) as vault:
        found = vault.sessions.resolve(session_id)
        if given or clear or flags.get("policy_name"):
            current = {} if clear or found.policy is None else found.policy.to_json()
            added = chosen_policy(state.config, flags)
            merged = _merged(current, {} if added is None else added.to_json())
            found = vault.sessions.update(found.id, policy=merged)
    if as_json:
        emit_json(found.to_json())
    else:
        click.echo(f"session {found.id} ({found.name}): policy {policy_text(found.policy)}")


def _merged(current: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``added``'s rules and models after its own, and its credential if set."""
    merged: dict[str, Any] = {
        key: list(dict.fromkeys([*(current.get(key) or []), *(added.get(key) or [])]))
        for key in ("allow", "deny", "models")
    }
    merged["credential"] = added.get("credential") or current.get("credential")
    return merged


@session.command(name="revoke")
@click.argument("session_id")
@pass_state
@one_line_errors
def session_revoke(state: State, session_id: str) -> None:
    """Revoke a session by id, unique id prefix, the key prefix the list shows
    (fn_sess_AbCd) or its whole token; effective on the next request."""
    with opened(state) as vault:
        found = vault.sessions.resolve(session_id)
        vault.sessions.revoke(found.id)
    click.echo(f"revoked session {found.id} ({found.name})", err=True)
