"""``vaultd env``: ``export`` lines for a shell that cannot be wrapped in ``vaultd run``.

``eval "$(vaultd env --service openai)"`` gives the shell (an IDE's terminal,
a long-lived session) what ``run`` gives its command: proxy URLs and a
proxy-only token, never a key. Nothing runs at the shell's exit to revoke the
token, so it lives for ``--ttl``; stderr says so, with how to revoke it.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any

import click

from vaultd.cli.common import State, one_line_errors, opened, pass_state, ttl_option
from vaultd.cli.limits import SESSION_FLAGS, chosen_limits, session_limit_options
from vaultd.cli.policy import chosen_policy, policy_options
from vaultd.errors import ValidationError
from vaultd.models import check_name, now
from vaultd.units import format_ago

VERB = "env"


@click.command(name="env")
@click.option("--service", "services_", multiple=True, help="A service to set up (repeatable).")
@click.option(
    "--ttl",
    default=None,
    help='The token\'s lifetime, e.g. "8h" [default: [sessions] default_ttl]; nothing '
    "revokes it when the shell exits.",
)
@click.option(
    "--name",
    default="vaultd env",
    show_default=True,
    help="The session's name in listings and the audit log.",
)
@session_limit_options
@policy_options
@pass_state
@one_line_errors
def env(
    state: State,
    /,
    services_: tuple[str, ...],
    ttl: str | None,
    name: str,
    **flags: Any,
) -> None:
    """Print export lines that point a shell at the proxy: eval "$(vaultd env)".

    The same variables as vaultd run sets (OPENAI_BASE_URL to vaultd's proxy,
    OPENAI_API_KEY to a proxy-only token for just these services), chosen by
    the same rules: without --service, every service that has a default key.
    The token variables of the other services are unset. Only the export and
    unset lines go to stdout; warnings go to stderr. The session lasts for
    --ttl, as nothing revokes it when the shell exits: vaultd session revoke
    ID ends it sooner. Limits and a policy bound it as they bound run's.
    Needs the daemon (VAULTD_URL, else the config's [server] host and port).
    """
    from vaultd.cli import child
    from vaultd.cli.run import chosen_services, keyless_warnings, mint, proxied_targets

    config = state.config
    limits = chosen_limits(flags, SESSION_FLAGS)
    policy = chosen_policy(config, flags)
    lifetime = config.default_ttl if ttl is None else ttl_option(ttl, config)
    try:
        check_name(name)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors[0].message, param_hint="--name") from None
    url = child.daemon_url(os.environ, config)
    child.check_daemon(url)
    with opened(state) as vault:
        chosen = chosen_services(vault, services_)
        created, token = mint(
            vault,
            config,
            name=name,
            services=chosen,
            ttl=lifetime,
            limits=limits,
            policy=policy,
        )
        try:
            child.check_daemon_services(url, token, chosen)
            targets = proxied_targets(config.services, chosen, asked=bool(services_))
            exports = child.proxy_vars(url, token, targets)
            unset = child.withheld(targets, config.services.values())
            lines = [
                *keyless_warnings(
                    vault, targets, None if policy is None else policy.credential, VERB
                ),
                # Unset whether or not this process sees them: the shell may hold
                # them unexported, or the lines may be sourced in another shell.
                child.unset_notice([n for n in unset if n in os.environ], VERB, "unsetting"),
                *child.base_url_warnings(url, targets, VERB),
                _lifetime_notice(created.id, created.expires_at),
            ]
        except BaseException:
            vault.sessions.revoke(created.id)
            raise
    for line in lines:
        if line is not None:
            click.echo(line, err=True)
    if sys.stdout.isatty():
        click.echo('vaultd env: to set these in this shell: eval "$(vaultd env ...)"', err=True)
    for var in unset:
        click.echo(f"unset {var}")
    for var, value in exports.items():
        click.echo(f"export {var}={shlex.quote(value)}")


def _lifetime_notice(session_id: str, expires_at: int | None) -> str:
    """How long the token lives, and how to end it sooner."""
    if expires_at is None:
        until = "never expires"
    else:
        at = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires_at))
        until = f"expires {format_ago(expires_at, now())} ({at})"
    return (
        f"vaultd {VERB}: session {session_id} {until}; nothing revokes it when the shell "
        f"exits: end it with: vaultd session revoke {session_id}"
    )
