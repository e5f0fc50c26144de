"""The ``vaultd`` command line (click only: the work is done in the modules it calls).

Every verb except ``serve`` and ``run`` works on the database directly and
never imports aiohttp, so it starts fast and works whether or not the daemon
runs. Anything a user can get wrong ends as one line on stderr and exit 1.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from vaultd import __version__
from vaultd.config import Config, load_config
from vaultd.core.vault import Vault, init_vault, open_vault
from vaultd.errors import VaultdError
from vaultd.models import Credential, now
from vaultd.units import format_ago, format_duration, parse_duration

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """What the global options chose; the config is read on first use."""

    def __init__(
        self, config_path: str | None, data_dir: str | None, passphrase_file: Path | None = None
    ) -> None:
        self.config_path = config_path
        self.data_dir = data_dir
        self.passphrase_file = passphrase_file
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, self.data_dir)
        return self._config


pass_state = click.make_pass_decorator(State)


def one_line_errors(fn: F) -> F:
    """Turn every error a user can cause into ``Error: <one line>`` and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaultdError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.Error as exc:
            raise click.ClickException(f"database error: {exc}") from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None

    return wrapper  # type: ignore[return-value]


def opened(state: State) -> Vault:
    """The existing vault, to use in a ``with`` block (it closes the database)."""
    return open_vault(state.config, passphrase_file=state.passphrase_file)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON shape.")(fn)


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def read_secret(prompt: str) -> str:
    """A hidden prompt on a terminal, else the first line of stdin; never argv."""
    if sys.stdin.isatty():
        value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
    else:
        raw = sys.stdin.buffer.readline(64 * 1024 + 2)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException("the secret on standard input is not UTF-8 text") from None
    value = value.strip()
    if not value:
        raise click.ClickException(
            "no secret given: type it at the prompt, or pipe it as the first line of stdin"
        )
    return value


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


def expiry_from(text: str | None) -> int | None:
    if text is None or text == "never":
        return None
    try:
        return now() + parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None


# -- presentation ------------------------------------------------------------


def describe(credential: Credential) -> None:
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
        ("expires", _expiry(credential, at)),
    ]
    rows += [(f"meta {k}", v) for k, v in sorted(credential.metadata.items())]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _expiry(credential: Credential, at: int) -> str:
    if credential.expires_at is None:
        return "never"
    return "expired" if credential.expired(at) else format_ago(credential.expires_at, at)


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


# -- commands ----------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaultd")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file [default: $VAULTD_CONFIG or ~/.config/vaultd/config.toml].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Directory of vault.db [default: $VAULTD_DATA_DIR or ~/.local/share/vaultd].",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Passphrase mode: a 0600 file whose first line is the passphrase "
    "[default: $VAULTD_PASSPHRASE_FILE, $CREDENTIALS_DIRECTORY/vaultd-passphrase, or a prompt].",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    data_dir: str | None,
    passphrase_file: Path | None,
) -> None:
    """vaultd keeps API keys encrypted and lends local tools short-lived tokens instead."""
    # Whatever this process creates (database, WAL, key) is private to the user.
    os.umask(0o077)
    ctx.obj = State(config_path, data_dir, passphrase_file)


@cli.command()
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


@cli.command()
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
    line of standard input (printf 'sk-...\\n' | vaultd add openai primary);
    never from the command line, where other users could see it.
    """
    metadata = parse_meta(meta)
    expires_at = expiry_from(expires)
    with opened(state) as vault:
        dek = vault.unlock()
        secret = read_secret(f"Secret for {service}/{name}")
        credential = vault.credentials.add(
            dek,
            service=service,
            name=name,
            secret=secret,
            type=type_,
            metadata=metadata,
            expires_at=expires_at,
        )
    if as_json:
        emit_json(credential.to_json())
    else:
        describe(credential)


@cli.command(name="list")
@click.option("--service", help="Only this service's credentials.")
@json_option
@pass_state
@one_line_errors
def list_(state: State, service: str | None, as_json: bool) -> None:
    """List stored credentials, oldest first (metadata only: secrets never leave)."""
    with opened(state) as vault:
        credentials = vault.credentials.list(service=service)
    if as_json:
        emit_json([c.to_json() for c in credentials])
        return
    if not credentials:
        click.echo("no credentials stored; add one with: vaultd add SERVICE NAME", err=True)
        return
    at = now()
    print_table(
        ["ID", "SERVICE", "NAME", "HINT", "DEFAULT", "LAST USED", "USES", "EXPIRES"],
        [
            [
                c.id,
                c.service,
                c.name,
                c.hint or "-",
                "*" if c.is_default else "",
                format_ago(c.last_used_at, at),
                str(c.use_count),
                _expiry(c, at),
            ]
            for c in credentials
        ],
    )


@cli.command()
@click.argument("ref")
@json_option
@pass_state
@one_line_errors
def show(state: State, ref: str, as_json: bool) -> None:
    """Show one credential's metadata. REF is an id, a unique id prefix, or service/name."""
    with opened(state) as vault:
        credential = vault.credentials.resolve(ref)
    if as_json:
        emit_json(credential.to_json())
    else:
        describe(credential)


@cli.command()
@click.argument("ref")
@json_option
@pass_state
@one_line_errors
def rotate(state: State, ref: str, as_json: bool) -> None:
    """Replace the secret of REF (read like `add` does); its id and name stay."""
    with opened(state) as vault:
        credential = vault.credentials.resolve(ref)
        dek = vault.unlock()
        secret = read_secret(f"New secret for {credential.service}/{credential.name}")
        credential = vault.credentials.update(credential.id, dek=dek, secret=secret)
    if as_json:
        emit_json(credential.to_json())
    else:
        describe(credential)


@cli.command()
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
@one_line_errors
def rm(state: State, ref: str, yes: bool) -> None:
    """Delete the credential REF and its sealed secret."""
    with opened(state) as vault:
        credential = vault.credentials.resolve(ref)
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


@cli.command()
@click.argument("ref")
@pass_state
@one_line_errors
def default(state: State, ref: str) -> None:
    """Make REF the key the proxy uses for its service unless told otherwise."""
    with opened(state) as vault:
        credential = vault.credentials.resolve(ref)
        vault.credentials.update(credential.id, is_default=True)
    click.echo(
        f"{credential.service}/{credential.name} is now the default for {credential.service}"
    )


@cli.command()
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
    items: list[dict[str, Any]] = [
        {
            "name": s.name,
            "base_url": s.base_url,
            "auth": s.auth,
            "builtin": s.builtin,
            "credential_count": counts.get(s.name, 0),
        }
        for s in config.services.values()
    ]
    if as_json:
        emit_json(items)
        return
    print_table(
        ["SERVICE", "BASE URL", "AUTH", "KEYS"],
        [[i["name"], i["base_url"], i["auth"], str(i["credential_count"])] for i in items],
    )


# -- sessions ----------------------------------------------------------------


@cli.group()
def session() -> None:
    """Tokens that local tools use instead of keys."""


def parse_ttl(text: str) -> int | None:
    if text == "never":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    if seconds <= 0:
        # A token that is expired when printed is a mistake, as the API says.
        raise click.BadParameter("must be longer than zero", param_hint="--ttl")
    return seconds


@session.command(name="create")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@click.option("--service", "services_", multiple=True, help="Allowed service (default all).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["read", "proxy", "admin"]),
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
    lifetime = config.default_ttl if ttl is None else parse_ttl(ttl)
    if lifetime is not None and lifetime > config.max_ttl:
        raise click.ClickException(
            f"--ttl {ttl} is longer than [sessions] max_ttl ({format_duration(config.max_ttl)})"
        )
    with opened(state) as vault:
        created, token = vault.sessions.create(
            name=name,
            scopes=list(scopes) or ["read", "proxy"],
            services=list(services_) or ["*"],
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
    if as_json:
        emit_json([s.to_json() for s in sessions])
        return
    if not sessions:
        click.echo("no sessions; create one with: vaultd session create", err=True)
        return
    at = now()
    print_table(
        ["ID", "NAME", "PREFIX", "SCOPES", "SERVICES", "STATUS", "LAST USED", "EXPIRES"],
        [
            [
                s.id,
                s.name,
                s.key_prefix,
                ",".join(s.scopes),
                ",".join(s.services),
                s.status(at),
                format_ago(s.last_used_at, at),
                "never" if s.expires_at is None else format_ago(s.expires_at, at),
            ]
            for s in sessions
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


# -- using keys ----------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--service", "services_", multiple=True, help="A service CMD may use (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime of the session.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
@one_line_errors
def run(state: State, services_: tuple[str, ...], ttl: str, command: tuple[str, ...]) -> None:
    """Run COMMAND with proxy URLs and a session token in its environment.

    Each service's variables are set, e.g. OPENAI_BASE_URL to vaultd's proxy and
    OPENAI_API_KEY to a proxy-only token for just these services, revoked when
    COMMAND exits. Without --service: every service that has a default key
    (but a token variable without a base-URL variable, such as GITHUB_TOKEN,
    only when that service is asked for by name).
    Needs the daemon (VAULTD_URL, default http://127.0.0.1:3978).
    """
    from vaultd.cli import runner

    config = state.config
    lifetime = parse_ttl(ttl)
    if lifetime is None or lifetime > config.max_ttl:
        raise click.BadParameter("must be a duration no longer than max_ttl", param_hint="--ttl")
    url = runner.daemon_url(os.environ)
    runner.check_daemon(url)
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
        )
        try:
            targets = [config.services[name] for name in chosen]
            if not services_:
                # Unasked, a token variable whose tool cannot be pointed at the
                # proxy would only carry the token off to the real API.
                targets = [t for t in targets if t.env_base_url or not t.env_key]
            env = runner.child_env(os.environ, url, token, targets)
            for line in runner.base_url_warnings(url, targets):
                click.echo(line, err=True)
            code = runner.run_command(command, env)
        finally:
            vault.sessions.revoke(created.id)
    sys.exit(code)


@cli.command(name="audit")
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
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    if not entries:
        click.echo(
            "no proxied requests recorded" + (" that match" if service or since else ""), err=True
        )
        return
    at = now()
    print_table(
        ["WHEN", "SERVICE", "METHOD", "PATH", "STATUS", "MS", "CREDENTIAL", "SESSION"],
        [
            [
                format_ago(e.at, at),
                e.service,
                e.method,
                e.path if len(e.path) <= 60 else e.path[:57] + "...",
                str(e.status),
                f"{e.duration_ms:.0f}",
                names.get(e.credential_id or "", e.credential_id or "-"),
                sessions.get(e.session_id or "", "-"),
            ]
            for e in entries
        ],
    )


# -- operations --------------------------------------------------------------


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
@one_line_errors
def backup(state: State, path: Path) -> None:
    """Copy the vault database to PATH (a new 0600 file), safely while the daemon runs.

    The copy holds ciphertext only and opens with the same key file: keep the
    key file backed up separately. Never overwrites PATH.
    """
    from vaultd.store.backup import backup_vault

    with opened(state) as vault:
        size = backup_vault(vault, path)
    click.echo(f"backed up {state.config.db_path} to {path} ({size} bytes)", err=True)


@cli.command()
@pass_state
@one_line_errors
def rekey(state: State) -> None:
    """Replace the data key and re-seal every credential with it, in one transaction.

    The key file stays the same. Stop the daemon first: it holds the old data
    key in memory (rekey refuses while it runs).
    """
    from vaultd.core.rekey import daemon_stopped
    from vaultd.core.rekey import rekey as rekey_vault

    with opened(state) as vault, daemon_stopped(state.config.data_dir):
        count = rekey_vault(vault)
    click.echo(f"new data key; re-sealed {count} credentials", err=True)


@cli.command()
@click.option(
    "--new-passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A 0600 file whose first line is the new passphrase [default: ask twice].",
)
@pass_state
@one_line_errors
def passwd(state: State, new_passphrase_file: Path | None) -> None:
    """Change the passphrase of a passphrase-locked vault (re-wraps the data key only)."""
    from vaultd.core.keysource import get_passphrase, read_passphrase_file
    from vaultd.core.vault import change_passphrase

    with opened(state) as vault:
        vault.unlock()  # the current passphrase first: a wrong one changes nothing
        if new_passphrase_file is not None:
            new = read_passphrase_file(new_passphrase_file)
        else:
            new = get_passphrase(
                None, what="New vault passphrase", confirm=True, env={}, use_credentials=False
            )
        change_passphrase(vault, new)
    click.echo("passphrase changed; restart the daemon with the new one", err=True)


@cli.command()
@pass_state
@one_line_errors
def doctor(state: State) -> None:
    """Check config, permissions, key, database, credentials and daemon; exit 1 on a FAIL."""
    from vaultd.cli.doctor import run_checks

    checks = run_checks(state.config_path, state.data_dir, passphrase_file=state.passphrase_file)
    for check in checks:
        click.echo(check.line())
    if any(c.level == "FAIL" for c in checks):
        sys.exit(1)


# -- daemon ------------------------------------------------------------------


@cli.command()
@click.option("--host", help="Address to listen on [default: [server] host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [default: [server] port].")
@pass_state
@one_line_errors
def serve(state: State, host: str | None, port: int | None) -> None:
    """Run the daemon in the foreground (logs to stderr; SIGTERM stops it cleanly)."""
    # Imported here: the other verbs must not pay for importing aiohttp.
    from vaultd.daemon.server import serve as run_server

    if state.passphrase_file is not None:
        # The daemon opens the vault in the app's startup, which reads this (a path, not a secret).
        os.environ["VAULTD_PASSPHRASE_FILE"] = str(state.passphrase_file)
    sys.exit(run_server(state.config, host=host, port=port))


def main() -> None:
    from vaultd.hardening import harden_process

    # Every verb may hold the data key or a passphrase in memory, not only serve:
    # no core dump, and not ptrace-able by other processes of the user.
    harden_process()
    cli(prog_name="vaultd")
