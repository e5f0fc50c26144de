"""The ``vaultd`` command line: the group, its global options, and every verb in it.

Every verb except ``serve`` and ``run`` works on the database directly and
never imports aiohttp, so it starts fast and works whether or not the daemon
runs (tests/cli/test_verbs.py checks that for each). Anything a user can get wrong
ends as one line on stderr and exit 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from vaultd import __version__
from vaultd.cli import audit, credentials, operations, run, sessions, usage
from vaultd.cli.common import State
from vaultd.cli.completion import completion
from vaultd.cli.env import env
from vaultd.cli.importing import import_
from vaultd.cli.ui import ui


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


for command in (
    credentials.init,
    credentials.add,
    credentials.list_,
    credentials.show,
    credentials.rotate,
    credentials.rm,
    credentials.default,
    credentials.limit,
    credentials.services,
    sessions.session,
    run.run,
    env,
    audit.audit_,
    usage.usage,
    operations.backup,
    operations.rekey,
    operations.passwd,
    operations.doctor,
    operations.serve,
    operations.systemd_unit,
    completion,
    ui,
):
    cli.add_command(command)

cli.add_command(import_)


def main() -> None:
    from vaultd.hardening import harden_process

    # Every verb may hold the data key or a passphrase in memory, not only serve:
    # no core dump, and not ptrace-able by other processes of the user.
    harden_process()
    cli(prog_name="vaultd")
