"""Keeping a vault: backup, rekey, passwd, doctor, and running the daemon (serve)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vaultd.cli.common import (
    State,
    one_line_errors,
    opened,
    pass_state,
)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
@one_line_errors
def backup(state: State, path: Path) -> None:
    """Copy the vault database to PATH (a new 0600 file), safely while the daemon runs.

    The copy holds ciphertext only and opens with the same key file: keep the
    key file backed up separately. Never overwrites PATH.
    """
    from vaultd.store.backup import backup_database

    with opened(state) as vault:
        size = backup_database(vault.db, path)
    click.echo(f"backed up {state.config.db_path} to {path} ({size} bytes)", err=True)


@click.command()
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


@click.command()
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
                None,
                what="New vault passphrase",
                confirm=True,
                env={},
                use_credentials=False,
                no_source="no terminal to ask for the new passphrase on: give "
                "--new-passphrase-file FILE (a 0600 file, the passphrase its first line)",
            )
        change_passphrase(vault, new)
    click.echo("passphrase changed; restart the daemon with the new one", err=True)


@click.command()
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


@click.command()
@click.option("--host", help="Address to listen on [default: [server] host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [default: [server] port].")
@pass_state
@one_line_errors
def serve(state: State, host: str | None, port: int | None) -> None:
    """Run the daemon in the foreground (logs to stderr; SIGTERM stops it cleanly)."""
    # Imported here: the other verbs must not pay for importing aiohttp.
    from vaultd.daemon.server import finish
    from vaultd.daemon.server import serve as run_server

    if state.passphrase_file is not None:
        # The daemon opens the vault in the app's startup, which reads this (a path, not a secret).
        os.environ["VAULTD_PASSPHRASE_FILE"] = str(state.passphrase_file)
    finish(run_server(state.config, host=host, port=port))


@click.command("systemd-unit")
@pass_state
@one_line_errors
def systemd_unit(state: State) -> None:
    """Print a systemd user unit that runs this vaultd as a service.

    vaultd systemd-unit > ~/.config/systemd/user/vaultd.service

    It is systemd/vaultd.service, hardening and all, with ExecStart naming
    the vaultd that printed it (a venv's or pipx's: no path to edit). Then
    systemctl --user daemon-reload, and systemctl --user enable --now vaultd.
    A config or vault elsewhere than the service will look is warned about
    on stderr.
    """
    from vaultd.cli.unit import mismatches, this_vaultd, unit_text

    # All that can fail first: `> vaultd.service` gets a whole unit or nothing.
    text = unit_text(this_vaultd())
    warnings = mismatches(state.config, Path.home())
    click.echo(text, nl=False)
    for line in warnings:
        click.echo(f"vaultd systemd-unit: warning: {line}", err=True)
