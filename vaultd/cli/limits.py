"""Limits from the command line (DESIGN 10): the flags, their checks, and how use is shown.

``vaultd session create``, ``vaultd run`` and ``vaultd session limit`` take a
session's flags; ``vaultd limit REF`` a credential's daily ones. Values are
checked by the same rules as the API's ``limits`` (``models.check_limits``);
a wrong one is one line naming the flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from vaultd.core.sessions import Used
from vaultd.errors import ValidationError
from vaultd.models import CREDENTIAL_LIMITS, SESSION_LIMITS, Limits, check_limits

F = TypeVar("F", bound=Callable[..., Any])

# limit name -> (flag, help)
SESSION_FLAGS: Mapping[str, tuple[str, str]] = {
    "max_requests": ("--max-requests", "Requests the session may make in all (N)."),
    "max_tokens": ("--max-tokens", "Input plus output tokens it may use in all (N)."),
    "max_cost_usd": ("--max-cost", "US dollars it may spend in all (USD)."),
    "rpm": ("--rpm", "Requests it may make in any 60 seconds (N)."),
    "concurrency": ("--concurrency", "Requests it may have in flight at once (N)."),
}
CREDENTIAL_FLAGS: Mapping[str, tuple[str, str]] = {
    "max_requests_per_day": ("--max-requests-per-day", "Requests per UTC day (N)."),
    "max_tokens_per_day": ("--max-tokens-per-day", "Tokens per UTC day (N)."),
    "max_cost_usd_per_day": ("--max-cost-per-day", "US dollars per UTC day (USD)."),
}
_COUNT = re.compile(r"[0-9]{1,20}")
_USD = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
assert set(SESSION_FLAGS) == set(SESSION_LIMITS)
assert set(CREDENTIAL_FLAGS) == set(CREDENTIAL_LIMITS)


def _options(flags: Mapping[str, tuple[str, str]], kinds: Mapping[str, type]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        for name, (flag, help_text) in reversed(list(flags.items())):
            # Read as text: the model's checks give the one-line errors, and
            # click's own int would let through what they refuse (0, -1).
            fn = click.option(
                flag, name, metavar="USD" if kinds[name] is float else "N", help=help_text
            )(fn)
        return fn

    return decorate


session_limit_options = _options(SESSION_FLAGS, SESSION_LIMITS)
credential_limit_options = _options(CREDENTIAL_FLAGS, CREDENTIAL_LIMITS)


def chosen_limits(values: Mapping[str, str | None], flags: Mapping[str, tuple[str, str]]) -> Limits:
    """The limits given on the command line, checked; ``{}`` when none was."""
    kinds = SESSION_LIMITS if flags is SESSION_FLAGS else CREDENTIAL_LIMITS
    given = {name: values[name] for name in flags if values.get(name) is not None}
    parsed: dict[str, object] = {}
    for name, text in given.items():
        flag = flags[name][0]
        assert text is not None
        # Plain digits (and a decimal point for dollars): what int() and float()
        # would also take (5_000, 1e3, inf, nan) is a typo more often than not.
        number = _USD if kinds[name] is float else _COUNT
        if not number.fullmatch(text):
            what = "a number of US dollars" if kinds[name] is float else "a whole number"
            raise click.UsageError(f"{flag} must be {what}, not {text!r}")
        parsed[name] = float(text) if kinds[name] is float else int(text, 10)
    try:
        return check_limits(parsed, kinds) or {}
    except ValidationError as exc:
        first = exc.errors[0]
        name = first.pointer.rsplit("/", 1)[-1]
        flag = flags[name][0] if name in flags else name
        raise click.UsageError(f"{flag} {first.message}") from None


def changed_limits(
    values: Mapping[str, str | None], flags: Mapping[str, tuple[str, str]], *, clear: bool
) -> Callable[[Limits | None], Limits | None]:
    """The flags of a ``limit`` verb, checked now: a function from the limits a record
    has to those it gets (the ones given replace theirs, the others stay unless
    ``clear``; None when none is left)."""
    changes = chosen_limits(values, flags)
    if not changes and not clear:
        raise click.UsageError("give a limit to set, or --clear")

    def apply(current: Limits | None) -> Limits | None:
        return {**({} if clear else current or {}), **changes} or None

    return apply


def used_text(used: Used, limits: Limits | None) -> str:
    """``3/500 req, 1.2k tok, $0.04/$5``: what was used, against any limit."""
    limits = limits or {}

    def part(count: str, name: str, maximum: Callable[[float], str]) -> str:
        return f"{count}/{maximum(limits[name])}" if name in limits else count

    return ", ".join(
        (
            part(str(used.requests), "max_requests", lambda m: str(int(m))) + " req",
            part(_tokens(used.tokens), "max_tokens", lambda m: _tokens(int(m))) + " tok",
            "$" + part(f"{used.cost_usd:.4f}", "max_cost_usd", lambda m: f"${m:g}"),
        )
    )


def limits_text(limits: Limits | None) -> str:
    if not limits:
        return "none"
    return ", ".join(f"{name} {value:g}" for name, value in limits.items())


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 10_000:
        return f"{count / 1000:.1f}k"
    return str(count)
