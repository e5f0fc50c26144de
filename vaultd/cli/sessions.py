"""``vaultd session``: minting, listing and revoking the tokens local tools hold."""

from __future__ import annotations

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
@pass_state
@one_line_errors
def session_create(
    state: State,
    /,
    name: str,
    services_: tuple[str, ...],
    scopes: tuple[str, ...],
    ttl: str | None,
    **limit_flags: str | None,
) -> None:
    """Mint a token; only the token goes to stdout, for TOKEN=$(vaultd session create)."""
    config = state.config
    limits = chosen_limits(limit_flags, SESSION_FLAGS)
    lifetime = config.default_ttl if ttl is None else ttl_option(ttl, config)
    with opened(state) as vault:
        created, token = vault.sessions.create(
            name=name,
            scopes=list(scopes) or list(DEFAULT_SCOPES),
            services=list(services_) or [ALL_SERVICES],
            ttl=lifetime,
            known_services=config.services,
            limits=limits or None,
        )
    expires = "never" if created.expires_at is None else format_ago(created.expires_at, now())
    click.echo(
        f"session {created.id} ({created.name}): scopes {', '.join(created.scopes)}; "
        f"services {', '.join(created.services)}; expires {expires}; "
        f"limits {limits_text(created.limits)}",
        err=True,
    )
    click.echo(token)


@session.command(name="list")
@json_option
@pass_state
@one_line_errors
def session_list(state: State, as_json: bool) -> None:
    """List sessions (never their tokens)."""
    with opened(state) as vault:
        sessions = vault.sessions.list()
    listing(
        sessions,
        as_json=as_json,
        empty="no sessions; create one with: vaultd session create",
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


@session.command(name="revoke")
@click.argument("session_id")
@pass_state
@one_line_errors
def session_revoke(state: State, session_id: str) -> None:
    """Revoke a session by id (or unique id prefix); effective on the next request."""
    with opened(state) as vault:
        found = vault.sessions.resolve(session_id)
        vault.sessions.revoke(found.id)
    click.echo(f"revoked session {found.id} ({found.name})", err=True)
