"""``vaultd run``: a command that sees proxy URLs and a session token, never a key."""

from __future__ import annotations

import difflib
import ipaddress
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

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
from vaultd.errors import ValidationError, VaultdError
from vaultd.isolation.plan import NETS
from vaultd.models import check_name

if TYPE_CHECKING:
    from vaultd.config import Config
    from vaultd.core.policy import Policy
    from vaultd.core.sessions import Session
    from vaultd.core.vault import Vault
    from vaultd.isolation.plan import Plan
    from vaultd.models import Limits
    from vaultd.services import Service


class RunCommand(click.Command):
    """``run``'s parsing: COMMAND takes every word from the first that is not one of
    run's options, so a misspelt option (``--servce``) would be run as a program.
    A word like an option there is a usage error instead, unless ``--`` came first.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        rest = super().parse_args(ctx, args)
        command = tuple(ctx.params.get("command") or ())
        if command and _looks_like_an_option(command[0]) and not _after_separator(given, command):
            raise click.UsageError(_no_such_option(self, ctx, command[0]), ctx)
        return rest


def _looks_like_an_option(word: str) -> bool:
    return word.startswith("-") and word not in ("-", "--")


def _after_separator(given: Sequence[str], command: Sequence[str]) -> bool:
    """Whether ``command`` (a suffix of ``given``) followed a ``--``: then a word
    like ``-x`` is what the user wants run, as ``vaultd run -- -x`` says."""
    start = len(given) - len(command)
    return start > 0 and given[start - 1] == "--"


def _no_such_option(command: click.Command, ctx: click.Context, word: str) -> str:
    names = sorted(
        {
            name
            for param in command.get_params(ctx)
            if isinstance(param, click.Option) and not param.hidden
            for name in param.opts
            if name.startswith("--")
        }
    )
    given = word.split("=", 1)[0]
    close = difflib.get_close_matches(given, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"no such option: {given}{hint}. run's options are {', '.join(names)}; "
        "put the command after them, or after --"
    )


@click.command(
    cls=RunCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--service", "services_", multiple=True, help="A service CMD may use (repeatable).")
@click.option(
    "--ttl",
    default=None,
    help="Cap on the session's whole lifetime, e.g. 8h [default: none: renewed while "
    "COMMAND runs; never: the same].",
)
@click.option(
    "--name",
    default=None,
    help="The session's name in listings and the audit log [default: run: and "
    "COMMAND's first two words].",
)
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
    ttl: str | None,
    name: str | None,
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
    only when that service is asked for by name). The token variables of the
    other services are taken out of COMMAND's environment.
    The session is a lease of minutes, renewed while COMMAND runs: it never
    expires under COMMAND, and ends within minutes if this process is killed.
    Limits (--max-requests, --max-cost, ...) bound what COMMAND may use through
    the session; a request over one gets a 429 problem and never goes upstream.
    A policy (--allow, --deny, --read-only, --model, --credential, --policy)
    bounds what it may do; a request it refuses gets a 403 problem, likewise.
    --isolate keeps COMMAND and all it starts from vaultd's config and data
    directories, key and passphrase files, [run] hide, and the daemon.
    Needs the daemon (VAULTD_URL, else the config's [server] host and port).
    """
    from vaultd.cli import child
    from vaultd.cli.lease import Lease, lease_length

    config = state.config
    limits = chosen_limits(flags, SESSION_FLAGS)
    policy = chosen_policy(config, flags)
    # None: no cap, the lease is renewed for as long as COMMAND runs.
    cap = None if ttl is None else ttl_option(ttl, config)
    if net != "all" and not isolate:
        raise click.UsageError("--net proxy-only needs --isolate")
    if name is not None:
        try:
            check_name(name)
        except ValidationError as exc:
            raise click.BadParameter(exc.errors[0].message, param_hint="--name") from None
    lease = lease_length(os.environ)
    url = child.daemon_url(os.environ, config)
    # Before anything is minted or run: what --isolate asks is given, or nothing runs.
    plan = _isolation_plan(state, url, net) if isolate else None
    try:
        # As a shell would: 127 or 126, one line, and nothing minted.
        child.check_command(command[0], os.environ)
    except child.CommandNotRun as exc:
        _exit_as_shell(exc)
    child.check_daemon(url)
    with opened(state) as vault:
        chosen = chosen_services(vault, services_)
        created, token = mint(
            vault,
            config,
            name=child.run_name(command) if name is None else name,
            services=chosen,
            ttl=lease if cap is None else min(lease, cap),
            limits=limits,
            policy=policy,
        )
        try:
            child.check_daemon_services(url, token, chosen)
            targets = proxied_targets(config.services, chosen, asked=bool(services_))
            env, removed = child.child_env(
                os.environ, url, token, targets, config.services.values()
            )
            lines = [
                *keyless_warnings(vault, targets, None if policy is None else policy.credential),
                child.unset_notice(removed),
                *child.base_url_warnings(url, targets),
            ]
            for line in lines:
                if line is not None:
                    click.echo(line, err=True)
            # Renewed from a thread of this process, which never forks: a
            # fork that runs Python in the child (--isolate's preexec_fn)
            # waits for a renewal under way to end (lease._WORKING).
            with Lease(
                config.db_path,
                created.id,
                lease,
                None if cap is None else created.created_at + cap,
                lambda line: click.echo(line, err=True),
            ):
                if plan is None:
                    code = child.run_command(command, env)
                else:
                    from vaultd.isolation.launch import run_confined

                    code = run_confined(plan, command, env)
        except child.CommandNotRun as exc:
            _exit_as_shell(exc)
        finally:
            vault.sessions.revoke(created.id)
    sys.exit(code)


class _CommandNotFound(click.ClickException):
    exit_code = 127  # as a shell exits for a command it cannot find


class _CommandCannotRun(click.ClickException):
    exit_code = 126  # ... and for one it found but cannot run


def _exit_as_shell(exc: Exception) -> NoReturn:
    """``Error: <line>``, exiting as a shell does for a command it could not start."""
    if getattr(exc, "exit_code", None) == _CommandNotFound.exit_code:
        raise _CommandNotFound(str(exc))
    raise _CommandCannotRun(str(exc))


def chosen_services(vault: Vault, asked: Sequence[str]) -> list[str]:
    """The services a session of ``run`` (or ``env``) covers: those ``asked`` by
    ``--service``, else every service that has a default key."""
    if asked:
        return list(dict.fromkeys(asked))
    chosen = sorted({c.service for c in vault.credentials.list() if c.is_default})
    if not chosen:
        raise click.ClickException("no keys stored yet; add one with: vaultd add SERVICE NAME")
    return chosen


def proxied_targets(
    services: Mapping[str, Service], chosen: Sequence[str], *, asked: bool
) -> list[Service]:
    """The services whose variables are set: ``chosen``, but when none was ``asked``
    by name, not one with a token variable and no base-URL variable."""
    targets = [services[service] for service in chosen]
    if not asked:
        # Unasked, a token variable whose tool cannot be pointed at the
        # proxy would only carry the token off to the real API.
        targets = [t for t in targets if t.env_base_url or not t.env_key]
    return targets


def keyless_warnings(
    vault: Vault, targets: Sequence[Service], credential: str | None, verb: str = "run"
) -> list[str]:
    """A line for each service COMMAND is given that has no key the proxy would use.

    It starts anyway (the key may be added while it runs), but its first
    request would otherwise be the first sign.
    """
    lines = []
    for service in targets:
        if credential is None:
            if vault.credentials.default_for(service.name) is None:
                lines.append(
                    f"vaultd {verb}: {service.name} has no default key, so its requests will "
                    f"fail: add one (vaultd add {service.name} NAME) or choose one "
                    f"(vaultd default {service.name}/NAME)"
                )
        elif not _has_credential(vault, service.name, credential):
            lines.append(
                f"vaultd {verb}: {service.name} has no key named {credential!r} (--credential), "
                "so its requests will fail"
            )
    return lines


def _has_credential(vault: Vault, service: str, wanted: str) -> bool:
    """Whether ``service`` has the credential named (or with the id) ``wanted``, as the
    proxy looks it up for a policy's ``credential``."""
    if vault.credentials.find(service, wanted) is not None:
        return True
    try:
        return vault.credentials.get(wanted).service == service
    except VaultdError:
        return False


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


def mint(
    vault: Vault,
    config: Config,
    *,
    name: str,
    services: list[str],
    ttl: int | None,
    limits: Limits | None,
    policy: Policy | None,
) -> tuple[Session, str]:
    """The proxy-only session ``run`` and ``env`` hand a command or a shell, and its token."""
    return vault.sessions.create(
        name=name,
        scopes=["proxy"],
        services=services,
        ttl=ttl,
        known_services=config.services,
        limits=limits or None,
        policy=None if policy is None else policy.to_json(),
    )
