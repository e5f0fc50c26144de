"""The ``vaultd`` command line: the group, its global options, and every verb in it.

Every verb except ``serve`` and ``run`` works on the database directly and
never imports aiohttp, so it starts fast and works whether or not the daemon
runs (tests/cli/test_verbs.py checks that for each). Anything a user can get wrong
ends as one line on stderr and exit 1.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click

from vaultd import __version__
from vaultd.cli.common import State

# Every verb, and where it is defined: a verb's module is imported when that
# verb runs (or --help lists it), not each time the CLI starts. `vaultd serve`
# then loads neither dotenv, nor the page's browser helpers, nor the isolation
# plan, and each verb starts in less time (click's "lazily loading
# subcommands" pattern, on Group's public list_commands / get_command).
VERBS: dict[str, tuple[str, str]] = {
    "init": ("credentials", "init"),
    "add": ("credentials", "add"),
    "list": ("credentials", "list_"),
    "show": ("credentials", "show"),
    "rotate": ("credentials", "rotate"),
    "rm": ("credentials", "rm"),
    "default": ("credentials", "default"),
    "limit": ("credentials", "limit"),
    "services": ("credentials", "services"),
    "session": ("sessions", "session"),
    "run": ("run", "run"),
    "env": ("env", "env"),
    "import": ("importing", "import_"),
    "audit": ("audit", "audit_"),
    "usage": ("usage", "usage"),
    "backup": ("operations", "backup"),
    "rekey": ("operations", "rekey"),
    "passwd": ("operations", "passwd"),
    "doctor": ("operations", "doctor"),
    "serve": ("operations", "serve"),
    "systemd-unit": ("operations", "systemd_unit"),
    "completion": ("completion", "completion"),
    "ui": ("ui", "ui"),
}


class LazyGroup(click.Group):
    """A group whose verbs (``VERBS``) are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *VERBS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        known = super().get_command(ctx, cmd_name)
        if known is not None or cmd_name not in VERBS:
            return known
        module, attribute = VERBS[cmd_name]
        command = getattr(importlib.import_module(f"vaultd.cli.{module}"), attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise RuntimeError(f"vaultd.cli.{module}.{attribute} is not the {cmd_name} verb")
        self.add_command(command)  # asked again (--help, completion): no second import
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in VERBS:
            # Not a verb (a typo, say): every verb loaded, so that click's error
            # suggests the nearest one from them ("Did you mean 'list'?").
            for name in VERBS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    from vaultd.hardening import harden_process

    # Every verb may hold the data key or a passphrase in memory, not only serve:
    # no core dump, and not ptrace-able by other processes of the user.
    harden_process()
    cli(prog_name="vaultd")
