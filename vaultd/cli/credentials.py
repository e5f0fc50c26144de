"""Verbs on the vault and its keys: init, add, list, show, rotate, rm, default, services."""

from __future__ import annotations

import shlex
import sys

import click

from vaultd.cli.common import (
    State,
    check_service_filter,
    expiry_from,
    json_option,
    one_line_errors,
    opened,
    parse_meta,
    pass_state,
    read_secret,
)
from vaultd.cli.limits import CREDENTIAL_FLAGS, changed_limits, credential_limit_options
from vaultd.cli.output import (
    emit_json,
    expiry_text,
    listing,
    print_table,
    show_credential,
)
from vaultd.cli.remote import find_remote, read_only, remote_credentials
from vaultd.core.limits import utc_day
from vaultd.core.sessions import Used
from vaultd.core.vault import Vault, init_vault
from vaultd.errors import Conflict, NotFound
from vaultd.models import Credential, check_known_service, now
from vaultd.store import counts
from vaultd.units import format_ago


@click.command()
@click.option(
    "--passphrase",
    "use_passphrase",
    is_flag=True,
    help="Lock the vault with a passphrase (Argon2id) instead of a key file.",
)
@pass_state
@one_line_errors
def init(state: State, use_passphrase: bool) -> None:
    """Create the data directory, the key file and the database.

    Never replaces an existing key; running it again only checks that the key
    opens the vault. With --passphrase no key file is made: the passphrase is
    asked on the terminal (twice), or read from --passphrase-file.
    """
    vault, created = init_vault(
        state.config, passphrase=use_passphrase, passphrase_file=state.passphrase_file
    )
    passphrase_mode = vault.passphrase_mode
    vault.close()
    config = state.config
    if use_passphrase and not passphrase_mode:
        raise click.ClickException(
            f"the vault {config.db_path} already exists and opens with the key file "
            f"{config.key_file}; --passphrase applies only to a new vault"
        )
    if created and passphrase_mode:
        click.echo(f"created vault {config.db_path}, locked by a passphrase", err=True)
        click.echo("no key file: without the passphrase nothing opens", err=True)
    elif passphrase_mode:
        click.echo(f"vault {config.db_path} already exists and opens with the passphrase")
    elif created:
        click.echo(f"created vault {config.db_path}", err=True)
        click.echo(f"key file {config.key_file} (back it up: without it nothing opens)", err=True)
    else:
        click.echo(f"vault {config.db_path} already exists and opens with {config.key_file}")


@click.command()
@click.argument("service")
@click.argument("name")
@click.option("--type", "type_", default="api_key", show_default=True, help="Credential type.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable).")
@click.option("--expires", metavar="DURATION", help='Expire after e.g. "90d" (default never).')
@json_option
@pass_state
@one_line_errors
def add(
    state: State,
    service: str,
    name: str,
    type_: str,
    meta: tuple[str, ...],
    expires: str | None,
    as_json: bool,
) -> None:
    """Store a new key for SERVICE under NAME.

    The secret is read from a hidden prompt on a terminal, else from the first
    line of standard input (printenv OPENAI_API_KEY | vaultd add openai primary);
    never from the command line, where other users could see it. A line that is
    plainly not the key alone (a placeholder such as sk-proj-..., NAME=value,
    quotes) is refused, unless --type says the secret is one people choose
    (generic_secret, basic_auth).
    """
    metadata = parse_meta(meta)
    expires_at = expiry_from(expires)
    with opened(state) as vault:
        # What can be wrong without the secret is said before it is asked for.
        _check_addable(vault, service, name)
        dek = vault.unlock()
        secret = read_secret(
            f"Secret for {service}/{name}",
            kind=type_,
            again=shlex.join(["vaultd", "add", service, name]),
            env_key=_env_key(state, service),
        )
        try:
            credential = vault.credentials.add(
                dek,
                service=service,
                name=name,
                secret=secret,
                type=type_,
                metadata=metadata,
                expires_at=expires_at,
            )
        except Conflict:
            # Taken while the secret was typed.
            raise _name_taken(service, name) from None
    show_credential(credential, as_json=as_json)


def _check_addable(vault: Vault, service: str, name: str) -> None:
    """A known service and a free name (``add`` checks both again as it writes):
    free in the vault, and not a remote source's (when the daemon can say)."""
    check_known_service(service, vault.config.services)
    if vault.credentials.find(service, name) is not None:
        raise _name_taken(service, name)
    if vault.config.sources:
        remote = find_remote(vault.config, f"{service}/{name}")
        if remote is not None:
            raise read_only(remote)


def _find(vault: Vault, ref: str) -> Credential:
    """The vault's credential ``ref``, else a remote source's as the daemon holds it."""
    try:
        return vault.credentials.resolve(ref)
    except NotFound:
        remote = find_remote(vault.config, ref) if vault.config.sources else None
        if remote is None:
            raise
        return remote


def _resolve(vault: Vault, ref: str) -> Credential:
    """The vault's credential ``ref``; for a remote source's, why it cannot be changed here."""
    credential = _find(vault, ref)
    if credential.source != "local":
        raise read_only(credential)
    return credential


def _name_taken(service: str, name: str) -> click.ClickException:
    return click.ClickException(
        f"a credential named {service}/{name} already exists; use "
        f"{shlex.join(['vaultd', 'rotate', f'{service}/{name}'])} to replace its secret"
    )


@click.command(name="list")
@click.option("--service", help="Only this service's credentials.")
@json_option
@pass_state
@one_line_errors
def list_(state: State, service: str | None, as_json: bool) -> None:
    """List stored credentials, oldest first (metadata only: secrets never leave),
    then those of the remote sources ([sources.NAME]) as the running daemon holds them."""
    with opened(state) as vault:
        credentials = vault.credentials.list(service=service)
    check_service_filter(state.config, service, credentials)
    remote, why_not = remote_credentials(state.config, service)
    if why_not:
        click.echo(why_not, err=True)
    sources = bool(state.config.sources)
    listing(
        credentials + remote,
        as_json=as_json,
        empty="no credentials stored; add one with: vaultd add SERVICE NAME",
        headers=[
            "ID",
            "SERVICE",
            "NAME",
            *(["SOURCE"] if sources else []),
            "HINT",
            "DEFAULT",
            "LAST USED",
            "USES",
            "EXPIRES",
        ],
        row=lambda c, at: [
            c.id,
            c.service,
            c.name,
            *([_source_cell(c)] if sources else []),
            c.hint or "-",
            "*" if c.is_default else "",
            format_ago(c.last_used_at, at),
            str(c.use_count),
            expiry_text(c, at),
        ],
    )


def _source_cell(credential: Credential) -> str:
    """``local``, or the source's name and, unless ``ok``, its state (``team (stale)``)."""
    status = credential.remote.get("status") if credential.remote else None
    return credential.source if status in (None, "ok") else f"{credential.source} ({status})"


@click.command()
@click.argument("ref")
@json_option
@pass_state
@one_line_errors
def show(state: State, ref: str, as_json: bool) -> None:
    """Show one credential's metadata. REF is an id, a unique id prefix, or service/name."""
    with opened(state) as vault:
        credential = _find(vault, ref)
        today = _used_today(vault, credential)
    show_credential(credential, as_json=as_json, used_today=today)


def _used_today(vault: Vault, credential: Credential) -> Used:
    """What the credential used today (UTC), as last written by the daemon."""
    return Used(*counts.credential_day(vault.db, credential.id, utc_day(now())))


@click.command()
@click.argument("ref")
@credential_limit_options
@click.option("--clear", is_flag=True, help="Remove every daily limit first.")
@json_option
@pass_state
@one_line_errors
def limit(state: State, /, ref: str, clear: bool, as_json: bool, **limit_flags: str | None) -> None:
    """Set daily limits (UTC days) of the credential REF; the others stay unless --clear.

    A request through the proxy that would go over one gets a 429 problem
    until the next UTC day. The daemon applies the change to its next request.
    """
    apply = changed_limits(limit_flags, CREDENTIAL_FLAGS, clear=clear)
    with opened(state) as vault:
        credential = _resolve(vault, ref)
        credential = vault.credentials.update(credential.id, limits=apply(credential.limits))
        today = _used_today(vault, credential)
    show_credential(credential, as_json=as_json, used_today=today)


@click.command()
@click.argument("ref")
@json_option
@pass_state
@one_line_errors
def rotate(state: State, ref: str, as_json: bool) -> None:
    """Replace the secret of REF (read like `add` does); its id and name stay."""
    with opened(state) as vault:
        credential = _resolve(vault, ref)
        dek = vault.unlock()
        secret = read_secret(
            f"New secret for {credential.service}/{credential.name}",
            kind=credential.type,
            again=shlex.join(["vaultd", "rotate", f"{credential.service}/{credential.name}"]),
            env_key=_env_key(state, credential.service),
        )
        credential = vault.credentials.update(credential.id, dek=dek, secret=secret)
    show_credential(credential, as_json=as_json)


def _env_key(state: State, service: str) -> str | None:
    """The variable a service's key usually sits in (a service gone from the config has none)."""
    known = state.config.services.get(service)
    return None if known is None else known.env_key


@click.command()
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
@one_line_errors
def rm(state: State, ref: str, yes: bool) -> None:
    """Delete the credential REF and its sealed secret."""
    with opened(state) as vault:
        credential = _resolve(vault, ref)
        label = f"{credential.service}/{credential.name} ({credential.id})"
        if not yes:
            if not sys.stdin.isatty():
                raise click.ClickException(f"not deleting {label} without confirmation: add --yes")
            click.confirm(f"Delete {label}?", abort=True, err=True)
        vault.credentials.delete(credential.id)
        orphaned = credential.is_default and vault.credentials.list(service=credential.service)
    click.echo(f"deleted {label}", err=True)
    if orphaned:
        click.echo(
            f"{credential.service} has no default credential now; choose one with: "
            f"vaultd default {credential.service}/NAME",
            err=True,
        )


@click.command()
@click.argument("ref")
@pass_state
@one_line_errors
def default(state: State, ref: str) -> None:
    """Make REF the key the proxy uses for its service unless told otherwise."""
    with opened(state) as vault:
        credential = _resolve(vault, ref)
        vault.credentials.update(credential.id, is_default=True)
    click.echo(
        f"{credential.service}/{credential.name} is now the default for {credential.service}"
    )


@click.command()
@json_option
@pass_state
@one_line_errors
def services(state: State, as_json: bool) -> None:
    """List the services vaultd can proxy to, built-in and configured."""
    config = state.config
    counts: dict[str, int] = {}
    if config.db_path.exists():
        with opened(state) as vault:
            for c in vault.credentials.list():
                counts[c.service] = counts.get(c.service, 0) + 1
    items = [s.to_json(counts.get(s.name, 0), with_builtin=True) for s in config.services.values()]
    if as_json:
        emit_json(items)
        return
    print_table(
        ["SERVICE", "BASE URL", "AUTH", "KEYS"],
        [[i["name"], i["base_url"], i["auth"], str(i["credential_count"])] for i in items],
    )
