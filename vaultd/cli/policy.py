"""A session's request policy from the command line (DESIGN 11): the flags and their checks.

``vaultd session create``, ``vaultd run`` and ``vaultd session policy`` take
``--allow``/``--deny RULE`` (repeatable), ``--read-only``, ``--model GLOB``
(repeatable), ``--credential NAME`` and ``--policy NAME``, which copies
``[policies.NAME]`` from the config (the flags add to it). Everything is
checked by the API's rules (``core.policy``); a wrong value is one line
naming the flag, or the config table and its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from vaultd.config import Config
from vaultd.core.policy import READ_ONLY, Policy, check_policy, parse_rule
from vaultd.errors import FieldError, ValidationError

F = TypeVar("F", bound=Callable[..., Any])
POLICY_FLAGS = ("allow", "deny", "read_only", "models", "credential", "policy_name")


def policy_options(fn: F) -> F:
    """The policy flags, as keyword arguments named in ``POLICY_FLAGS``."""
    options = (
        click.option(
            "--allow",
            "allow",
            multiple=True,
            metavar="RULE",
            help='Allow only requests matching a rule "METHODS PATH" (repeatable), '
            'e.g. "POST /v1/chat/completions"; PATH globs: * in a segment, ** across.',
        ),
        click.option(
            "--deny", "deny", multiple=True, metavar="RULE", help="Refuse matching requests."
        ),
        click.option(
            "--read-only", "read_only", is_flag=True, help='Allow only "GET,HEAD,OPTIONS /**".'
        ),
        click.option(
            "--model",
            "models",
            multiple=True,
            metavar="GLOB",
            help="Allow only these models, e.g. gpt-4o-mini or claude-* (repeatable).",
        ),
        click.option(
            "--credential",
            "credential",
            metavar="NAME",
            help="The one credential name the session may use, per service.",
        ),
        click.option(
            "--policy",
            "policy_name",
            metavar="NAME",
            help="Start from [policies.NAME] in the config; the flags add to it.",
        ),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def _rules(flag: str, texts: Sequence[str]) -> list[str]:
    for text in texts:
        try:
            parse_rule(text)
        except ValueError as exc:
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise click.UsageError(f"{flag} {shown!r}: {exc}") from None
    return list(texts)


def _named(config: Config, name: str) -> dict[str, Any]:
    table = config.policies.get(name)
    if table is None:
        known = ", ".join(sorted(config.policies)) or "none is configured"
        raise click.UsageError(f"--policy {name!r}: no [policies.{name}] in the config ({known})")
    try:
        policy = check_policy(dict(table), pointer="")
    except ValidationError as exc:
        raise click.UsageError(_config_error(name, exc.errors[0])) from None
    return {} if policy is None else policy.to_json()


def _config_error(name: str, error: FieldError) -> str:
    key = error.pointer.strip("/").replace("/", "[", 1)
    key = key + "]" if "[" in key else key
    return (
        f"[policies.{name}] {key}: {error.message}" if key else f"[policies.{name}] {error.message}"
    )


def chosen_policy(config: Config, flags: Mapping[str, Any]) -> Policy | None:
    """The policy the flags describe (with ``--policy NAME`` under them), or None for none."""
    name = flags.get("policy_name")
    base = _named(config, name) if name else {}
    allow = list(base.get("allow") or [])
    if flags.get("read_only"):
        allow += READ_ONLY
    allow += _rules("--allow", flags.get("allow") or ())
    deny = list(base.get("deny") or []) + _rules("--deny", flags.get("deny") or ())
    models = list(base.get("models") or []) + list(flags.get("models") or ())
    credential = base.get("credential")
    wanted = flags.get("credential")
    if wanted is not None and credential is not None and wanted != credential:
        raise click.UsageError(
            f"--credential {wanted!r}: [policies.{name}] already names {credential!r}"
        )
    value = {
        # Each rule once, in the order given: a named policy and a flag may repeat one.
        "allow": list(dict.fromkeys(allow)),
        "deny": list(dict.fromkeys(deny)),
        "models": list(dict.fromkeys(models)),
        "credential": wanted if wanted is not None else credential,
    }
    try:
        return check_policy(value)
    except ValidationError as exc:
        first = exc.errors[0]
        field = first.pointer.split("/")[2] if first.pointer.count("/") >= 2 else "policy"
        flag = {"allow": "--allow", "deny": "--deny", "models": "--model"}.get(
            field, "--credential"
        )
        raise click.UsageError(f"{flag}: {first.message}") from None


def policy_text(policy: Policy | None) -> str:
    """A session's policy on one line: ``none``, or each part that constrains it."""
    if policy is None:
        return "none"
    parts = []
    if policy.allow:
        parts.append("allow " + ", ".join(rule.text for rule in policy.allow))
    if policy.deny:
        parts.append("deny " + ", ".join(rule.text for rule in policy.deny))
    if policy.models:
        parts.append("models " + ", ".join(policy.models))
    if policy.credential:
        parts.append(f"credential {policy.credential}")
    return "; ".join(parts)
