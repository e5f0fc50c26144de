"""``vaultd audit``: recent proxied requests, read from the database (no aiohttp)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vaultd.cli.common import (
    State,
    check_service_filter,
    json_option,
    one_line_errors,
    opened,
    pass_state,
)
from vaultd.cli.output import listing
from vaultd.models import now
from vaultd.units import format_ago, parse_duration

if TYPE_CHECKING:
    from vaultd.store.audit import AuditEntry


@click.command(name="audit")
@click.option("--service", help="Only this service.")
@click.option("--since", metavar="DURATION", help='Only the last e.g. "1h" or "7d".')
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="At most this many.",
)
@json_option
@pass_state
@one_line_errors
def audit_(state: State, service: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Recent proxied requests, newest first: who used which key, where, and how it went."""
    from vaultd.store.audit import list_entries

    start = None
    if since is not None:
        try:
            start = now() - parse_duration(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    with opened(state) as vault:
        entries = list_entries(vault.db, service=service, since=start, limit=limit)
        names = {c.id: f"{c.service}/{c.name}" for c in vault.credentials.list()}
        sessions = {s.id: s.name for s in vault.sessions.list()}
    check_service_filter(state.config, service, entries)
    listing(
        entries,
        as_json=as_json,
        empty="no proxied requests recorded" + (" that match" if service or since else ""),
        headers=[
            "WHEN",
            "SERVICE",
            "METHOD",
            "PATH",
            "STATUS",
            "MS",
            "CREDENTIAL",
            "SESSION",
            "TOKENS",
            "COST",
        ],
        row=lambda e, at: [
            format_ago(e.at, at),
            e.service,
            e.method,
            e.path if len(e.path) <= 60 else e.path[:57] + "...",
            # A refusal says why: "429 limit-exceeded session.rpm".
            str(e.status) if e.refusal is None else f"{e.status} {e.refusal}",
            f"{e.duration_ms:.0f}",
            names.get(e.credential_id or "", e.credential_id or "-"),
            # A session pruned since ([sessions] keep) by its id, as a deleted credential.
            sessions.get(e.session_id or "", e.session_id or "-"),
            _tokens(e),
            "-" if e.cost_usd is None else f"${e.cost_usd:.4f}",
        ],
    )


def _tokens(entry: AuditEntry) -> str:
    """``12+8``: input and output tokens; ``-`` unmetered; a ``~`` for a partial count."""
    if entry.input_tokens is None or entry.output_tokens is None:
        return "-"
    mark = "~" if entry.usage_partial else ""
    return f"{mark}{entry.input_tokens}+{entry.output_tokens}"
