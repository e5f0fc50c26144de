"""``vaultd usage``: requests, tokens and cost, grouped, read from the database (no aiohttp).

The groups and their rules are ``vaultd.store.usage``'s, the same as
``GET /api/usage``'s, and ``--json`` prints that endpoint's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from vaultd.cli.common import State, json_option, one_line_errors, opened, pass_state
from vaultd.cli.output import emit_json, print_table
from vaultd.core.vault import Vault
from vaultd.models import now
from vaultd.store.usage import MAX_GROUPS, USAGE_BY, UsageGroup, usage_groups
from vaultd.units import parse_moment

# The fewest characters of a session's id shown after its name; more where
# two ids start alike (ids begin with their creation time, so sessions made
# within a minute of each other share their first eight).
SESSION_ID_SHOWN = 8
NUMBER_HEADERS = ("REQUESTS", "INPUT", "OUTPUT", "CACHED", "COST", "UNMETERED", "UNPRICED")


@click.command(name="usage")
@click.option(
    "--by",
    type=click.Choice(USAGE_BY),
    default="day",
    show_default=True,
    help="Group by UTC day, session, credential, model or service.",
)
@click.option(
    "--since", metavar="WHEN", help='From this time: Unix seconds, or e.g. "7d" back from now.'
)
@click.option("--until", metavar="WHEN", help="Up to (not including) this time, the same way.")
@json_option
@pass_state
@one_line_errors
def usage(state: State, by: str, since: str | None, until: str | None, as_json: bool) -> None:
    """Requests, tokens and cost of proxied calls, grouped, with totals.

    Only requests that went upstream count; "unmetered" ones are those whose
    answer gave no token counts, "unpriced" ones those whose model has no price
    (their cost is not in COST).
    """
    at = now()
    start = _moment(since, "--since", at)
    end = _moment(until, "--until", at)
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("must be later than --since", param_hint="--until")
    with opened(state) as vault:
        groups = usage_groups(vault.db, by=by, since=start, until=end)
        label = _labeller(vault, by)
    if as_json:
        emit_json([g.to_json() for g in groups])
        return
    if not groups:
        click.echo(
            "no proxied requests recorded" + (" in that time" if since or until else ""), err=True
        )
        return
    rows = [[label(g.key), *_numbers(g)] for g in groups]
    rows.append(["TOTAL", *_numbers(_total(groups))])
    print_table([by.upper(), *NUMBER_HEADERS], _right_aligned(rows, first=1))
    if len(groups) == MAX_GROUPS:
        what = "newest days" if by == "day" else "largest groups"
        click.echo(
            f"at most the {MAX_GROUPS} {what} are shown, and TOTAL is theirs:"
            " narrow the time with --since and --until",
            err=True,
        )


def _moment(text: str | None, flag: str, at: int) -> int | None:
    if text is None:
        return None
    try:
        return parse_moment(text, at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def _labeller(vault: Vault, by: str) -> Callable[[str | None], str]:
    """How a group's key reads: names where the record still exists, else the id."""
    names: dict[str, str] = {}
    if by == "credential":
        names = {c.id: f"{c.service}/{c.name}" for c in vault.credentials.list()}
    elif by == "session":
        sessions = vault.sessions.list()
        short = _short_ids([s.id for s in sessions])
        names = {s.id: f"{s.name} ({short[s.id]})" for s in sessions}
    return lambda key: "-" if key is None else names.get(key, key)


def _short_ids(ids: list[str]) -> dict[str, str]:
    """Each id cut to the shortest prefix no other id starts with (at least SESSION_ID_SHOWN)."""
    ordered = sorted(ids)
    short = {}
    for i, this in enumerate(ordered):
        # In sorted order, the ids most like this one are its neighbours.
        neighbours = [o for o in ordered[max(0, i - 1) : i + 2] if o != this]
        shared = max((_shared_prefix(this, o) for o in neighbours), default=0)
        short[this] = this[: max(SESSION_ID_SHOWN, shared + 1)]
    return short


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` have in common."""
    pairs = enumerate(zip(a, b, strict=False))
    return next((n for n, (x, y) in pairs if x != y), min(len(a), len(b)))


def _numbers(group: UsageGroup) -> list[str]:
    return [
        f"{group.requests:,}",
        f"{group.input_tokens:,}",
        f"{group.output_tokens:,}",
        f"{group.cached_input_tokens:,}",
        f"${group.cost_usd:,.4f}",
        f"{group.unmetered_requests:,}",
        f"{group.unpriced_requests:,}",
    ]


def _total(groups: Sequence[UsageGroup]) -> UsageGroup:
    return UsageGroup(
        key=None,
        requests=sum(g.requests for g in groups),
        input_tokens=sum(g.input_tokens for g in groups),
        output_tokens=sum(g.output_tokens for g in groups),
        cached_input_tokens=sum(g.cached_input_tokens for g in groups),
        cost_usd=round(sum(g.cost_usd for g in groups), 6),
        unmetered_requests=sum(g.unmetered_requests for g in groups),
        unpriced_requests=sum(g.unpriced_requests for g in groups),
    )


def _right_aligned(rows: list[list[str]], *, first: int) -> list[list[str]]:
    """Number columns (from ``first`` on) padded on the left, so that digits line up.

    The table printer pads every cell on the right to its column's width;
    a cell already as wide as its header and every other cell stays as it is.
    """
    headers = ("",) * first + NUMBER_HEADERS
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return [
        [cell if i < first else cell.rjust(widths[i]) for i, cell in enumerate(row)] for row in rows
    ]
