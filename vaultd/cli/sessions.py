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
from vaultd.cli.output import listing
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
@pass_state
@one_line_errors
def session_create(
    state: State,
    name: str,
    services_: tuple[str, ...],
    scopes: tuple[str, ...],
    ttl: str | None,
) -> None:
    """Mint a token; only the token goes to stdout, for TOKEN=$(vaultd session create)."""
    config = state.config
    lifetime = config.default_ttl if ttl is None else ttl_option(ttl, config)
    with opened(state) as vault:
        created, token = vault.sessions.create(
            name=name,
            scopes=list(scopes) or list(DEFAULT_SCOPES),
            services=list(services_) or [ALL_SERVICES],
            ttl=lifetime,
            known_services=config.services,
        )
    expires = "never" if created.expires_at is None else format_ago(created.expires_at, now())
    click.echo(
        f"session {created.id} ({created.name}): scopes {', '.join(created.scopes)}; "
        f"services {', '.join(created.services)}; expires {expires}",
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
        headers=["ID", "NAME", "PREFIX", "SCOPES", "SERVICES", "STATUS", "LAST USED", "EXPIRES"],
        row=lambda s, at: [
            s.id,
            s.name,
            s.key_prefix,
            ",".join(s.scopes),
            ",".join(s.services),
            s.status(at),
            format_ago(s.last_used_at, at),
            "never" if s.expires_at is None else format_ago(s.expires_at, at),
        ],
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
