"""``vaultd completion SHELL``: the script that makes SHELL complete vaultd's verbs and options.

It is click's own (``_VAULTD_COMPLETE=bash_source vaultd``): the script asks
``vaultd`` itself for completions as the user types, so it always knows the
verbs and options of the vaultd on ``PATH``.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "vaultd"
COMPLETE_VAR = "_VAULTD_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(vaultd completion bash)" in ~/.bashrc
    zsh:  eval "$(vaultd completion zsh)" in ~/.zshrc
    fish: vaultd completion fish > ~/.config/fish/completions/vaultd.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    if completer is None:  # not one of click's: SHELLS are
        raise click.UsageError(f"no completion for {shell}", ctx)
    script = completer(ctx.find_root().command, {}, PROG_NAME, COMPLETE_VAR).source()
    click.echo(script)
