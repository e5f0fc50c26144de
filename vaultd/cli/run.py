"""``vaultd run``: a command that sees proxy URLs and a session token, never a key."""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

import click

from vaultd.cli.common import (
    State,
    one_line_errors,
    opened,
    pass_state,
    ttl_option,
)
from vaultd.cli.limits import SESSION_FLAGS, chosen_limits, session_limit_options
from vaultd.cli.policy import chosen_policy, policy_options
from vaultd.isolation.plan import NETS

if TYPE_CHECKING:
    from vaultd.isolation.plan import Plan


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--service", "services_", multiple=True, help="A service CMD may use (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime of the session.")
@click.option(
    "--isolate",
    is_flag=True,
    help="Confine COMMAND: it cannot reach vaultd's files, the daemon or this process "
    "(Linux: bubblewrap and Landlock; refused where they are missing).",
)
@click.option(
    "--net",
    type=click.Choice(NETS),
    default="all",
    show_default=True,
    help="With --isolate: proxy-only lets COMMAND reach the daemon and nothing else.",
)
@session_limit_options
@policy_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
@one_line_errors
def run(
    state: State,
    /,
    services_: tuple[str, ...],
    ttl: str,
    isolate: bool,
    net: str,
    command: tuple[str, ...],
    **flags: Any,
) -> None:
    """Run COMMAND with proxy URLs and a session token in its environment.

    Each service's variables are set, e.g. OPENAI_BASE_URL to vaultd's proxy and
    OPENAI_API_KEY to a proxy-only token for just these services, revoked when
    COMMAND exits. Without --service: every service that has a default key
    (but a token variable without a base-URL variable, such as GITHUB_TOKEN,
    only when that service is asked for by name).
    Limits (--max-requests, --max-cost, ...) bound what COMMAND may use through
    the session; a request over one gets a 429 problem and never goes upstream.
    A policy (--allow, --deny, --read-only, --model, --credential, --policy)
    bounds what it may do; a request it refuses gets a 403 problem, likewise.
    --isolate keeps COMMAND and all it starts from vaultd's config and data
    directories, key and passphrase files, [run] hide, and the daemon.
    Needs the daemon (VAULTD_URL, else the config's [server] host and port).
    """
    from vaultd.cli import child

    config = state.config
    limits = chosen_limits(flags, SESSION_FLAGS)
    policy = chosen_policy(config, flags)
    lifetime = ttl_option(ttl, config)
    if lifetime is None:
        # The session is revoked when COMMAND exits; one left over by a
        # killed `vaultd run` must still end.
        raise click.BadParameter("must be a duration, not never", param_hint="--ttl")
    if net != "all" and not isolate:
        raise click.UsageError("--net proxy-only needs --isolate")
    url = child.daemon_url(os.environ, config)
    # Before anything is minted or run: what --isolate asks is given, or nothing runs.
    plan = _isolation_plan(state, url, net) if isolate else None
    child.check_daemon(url)
    with opened(state) as vault:
        if services_:
            chosen = list(dict.fromkeys(services_))
        else:
            chosen = sorted({c.service for c in vault.credentials.list() if c.is_default})
            if not chosen:
                raise click.ClickException(
                    "no keys stored yet; add one with: vaultd add SERVICE NAME"
                )
        created, token = vault.sessions.create(
            # Only the program's name: its arguments may hold things not meant for a list.
            name=f"run: {os.path.basename(command[0])}"[:255],
            scopes=["proxy"],
            services=chosen,
            ttl=lifetime,
            known_services=config.services,
            limits=limits or None,
            policy=None if policy is None else policy.to_json(),
        )
        try:
            child.check_daemon_services(url, token, chosen)
            targets = [config.services[name] for name in chosen]
            if not services_:
                # Unasked, a token variable whose tool cannot be pointed at the
                # proxy would only carry the token off to the real API.
                targets = [t for t in targets if t.env_base_url or not t.env_key]
            env = child.child_env(os.environ, url, token, targets)
            for line in child.base_url_warnings(url, targets):
                click.echo(line, err=True)
            if plan is None:
                code = child.run_command(command, env)
            else:
                from vaultd.isolation.launch import run_confined

                code = run_confined(plan, command, env)
        finally:
            vault.sessions.revoke(created.id)
    sys.exit(code)


def _isolation_plan(state: State, url: str, net: str) -> Plan:
    """What ``--isolate`` will hide and how, once this machine is known to give it all."""
    from vaultd.isolation.check import problems
    from vaultd.isolation.plan import IsolationUnavailable, make_plan

    missing = problems(net)
    if missing:
        raise IsolationUnavailable("--isolate is not available here: " + "; ".join(missing))
    proxy = _daemon_address(url) if net == "proxy-only" else None
    return make_plan(state.config, os.environ, state.passphrase_file, net, proxy)


def _daemon_address(url: str) -> tuple[str, int]:
    """The loopback address and port of ``url``, which the sandbox's relay listens on."""
    from vaultd.isolation.plan import IsolationUnavailable

    parts = urllib.parse.urlsplit(url)
    host = "127.0.0.1" if parts.hostname == "localhost" else (parts.hostname or "")
    try:
        loopback = (
            ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback
        )
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.port is None:
        raise IsolationUnavailable(
            f"--net proxy-only needs the daemon on an http://127.x.x.x:PORT address, not {url}"
        )
    return host, parts.port
