"""What every verb shares: the global options' state, one-line errors, opening the vault, input.

Verbs are plain click commands in the modules beside this one; ``main`` puts
them in one group. Nothing here imports aiohttp.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from vaultd.config import Config, load_config
from vaultd.core.vault import Vault, open_vault
from vaultd.errors import VaultdError
from vaultd.models import now, secret_mistake
from vaultd.services import unknown_service
from vaultd.units import TTLTooLong, parse_duration, parse_ttl

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
        except BrokenPipeError:
            quiet_broken_pipe()
        except VaultdError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.Error as exc:
            raise click.ClickException(f"database error: {exc}") from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None

    return wrapper  # type: ignore[return-value]


# How a shell reports a process that SIGPIPE ended (128 + 13), as `yes | head -1` does.
EXIT_BROKEN_PIPE = 141


def quiet_broken_pipe() -> NoReturn:
    """The reader of our output left (``vaultd doctor | head -1``): stop without a word.

    What the Python docs advise for SIGPIPE: point the standard streams at
    /dev/null, so that the interpreter's last flush cannot fail and print a
    traceback, and exit as a process that SIGPIPE ended would, which is what
    ``set -o pipefail`` scripts already expect of ``head``'s other writers.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):  # not a real file (a test's buffer)
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


def opened(state: State) -> Vault:
    """The existing vault, to use in a ``with`` block (it closes the database)."""
    return open_vault(state.config, passphrase_file=state.passphrase_file)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON shape.")(fn)


def read_secret(prompt: str, *, kind: str, again: str, env_key: str | None) -> str:
    """A hidden prompt on a terminal, else the first line of stdin; never argv.

    A pasted line that is not a key of ``kind`` alone (a placeholder, quotes,
    ``NAME=value``) is refused here, before anything is written, with how to
    pass the key itself: ``again`` is the command to run, ``env_key`` the
    variable the key usually sits in.
    """
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
    mistake = secret_mistake(value, kind)
    if mistake is not None:
        # Never any of the value itself: it may be the key with a stray quote.
        raise click.ClickException(
            f"the secret {mistake}; pass only the key: paste it at the hidden prompt of "
            f"{again}, or: printenv {env_key or 'VARIABLE'} | {again}"
        )
    return value


def check_service_filter(config: Config, service: str | None, found: Sized) -> None:
    """``--service S`` that matched nothing and is no service vaultd knows: a typo, said so.

    A service gone from the config still lists what it left behind.
    """
    if service is not None and not found and service not in config.services:
        raise click.ClickException(unknown_service(service, config.services))


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


def ttl_option(text: str, config: Config) -> int | None:
    """``--ttl`` by the API's rules (``units.parse_ttl``), as a usage error naming the option."""
    try:
        return parse_ttl(text, config.max_ttl)
    except TTLTooLong as exc:
        raise click.ClickException(f"--ttl {text}: {exc}") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
