"""How the CLI prints: tables with control characters escaped, credential details, JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import click

from vaultd.cli.limits import limits_text
from vaultd.core.sessions import Used
from vaultd.models import Credential, now
from vaultd.units import format_ago

T = TypeVar("T", bound="JsonShaped")


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


class JsonShaped(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def listing(
    items: Sequence[T],
    *,
    as_json: bool,
    empty: str,
    headers: Sequence[str],
    row: Callable[[T, int], Sequence[str]],
) -> None:
    """A list verb's output: the API's JSON shape, a table, or ``empty`` on stderr.

    ``row(item, now)`` gives an item's cells (``now`` for "3 min ago").
    """
    if as_json:
        emit_json([item.to_json() for item in items])
    elif not items:
        click.echo(empty, err=True)
    else:
        at = now()
        print_table(headers, [row(item, at) for item in items])


def show_credential(
    credential: Credential, *, as_json: bool, used_today: Used | None = None
) -> None:
    """One credential: the API's JSON shape, or a line per field."""
    if as_json:
        emit_json(credential.to_json())
    else:
        describe(credential, used_today)


def describe(credential: Credential, used_today: Used | None = None) -> None:
    at = now()
    rows = [
        ("id", credential.id),
        ("service", credential.service),
        ("name", credential.name),
        ("type", credential.type),
        ("hint", credential.hint or "-"),
        ("default", "yes" if credential.is_default else "no"),
        ("created", format_ago(credential.created_at, at)),
        ("updated", format_ago(credential.updated_at, at)),
        ("last used", format_ago(credential.last_used_at, at)),
        ("uses", str(credential.use_count)),
        ("expires", expiry_text(credential, at)),
    ]
    if credential.limits:
        rows.append(("limits", limits_text(credential.limits) + " (UTC day)"))
    if used_today is not None:
        rows.append(
            (
                "today",
                f"{used_today.requests} requests, {used_today.tokens} tokens, "
                f"${used_today.cost_usd:.4f} (UTC day)",
            )
        )
    rows += [(f"meta {k}", v) for k, v in sorted(credential.metadata.items())]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def expiry_text(credential: Credential, at: int) -> str:
    """ "never", "in 90 days"; marked within 14 days ("in 3 days !"), and "EXPIRED (...)"."""
    if credential.expires_at is None:
        return "never"
    when = format_ago(credential.expires_at, at)
    if credential.expired(at):
        return f"EXPIRED ({when})"
    return f"{when} !" if credential.expires_soon(at) else when


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``), for a terminal.

    Table cells can come from outside (an audit row's path or service is
    whatever a local client sent): raw escape sequences could retitle the
    terminal or hide rows.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
