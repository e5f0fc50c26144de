"""``vaultd import``: move the keys of a .env file into the vault (DESIGN 14).

The file is read with care (it is named by the user, but may be anything: a
FIFO that would block, a 100 MB log, a symlink to vaultd's own key), parsed
by python-dotenv as the tools that load it do, and every variable that is a
service's key (its ``env_key``, or ``--map VAR=SERVICE``) is stored in one
transaction. ``--rewrite`` then replaces exactly those lines with a comment,
only once every key is stored, keeping every other byte of the file.
No value, nor any part of one, is ever printed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
from dotenv import dotenv_values
from dotenv.parser import parse_stream

from vaultd.cli.common import State, one_line_errors, opened, pass_state
from vaultd.cli.output import print_table, printable
from vaultd.config import Config, config_home
from vaultd.core.credentials import NewCredential
from vaultd.errors import ValidationError
from vaultd.models import check_secret, secret_mistake
from vaultd.services import unknown_service

MAX_FILE_BYTES = 1024 * 1024
BOM = b"\xef\xbb\xbf"
# The name a key gets; a service that has one already gets the variable's name
# lower-cased (openai_api_key), as DESIGN 14 says.
DEFAULT_NAME = "imported"
# How python-dotenv's parser counts lines (its Position.advance) and what it
# skips before a binding: a binding's text starts after that.
_NEWLINE = re.compile(r"\r\n|\n|\r")
_LEADING_SPACE = re.compile(r"\s*", re.MULTILINE)
_LINE_END = re.compile(r"(\r\n|\n|\r)\Z")


@dataclass
class Assignment:
    """One ``NAME=value`` in the file: where its text is (after any blank lines before it)."""

    key: str
    start: int
    end: int
    line: int


@dataclass
class Variable:
    """A variable of the file, once however often it is set (python-dotenv: the last wins)."""

    key: str
    value: str
    lines: list[int] = field(default_factory=list)
    service: str | None = None
    name: str | None = None
    skipped: str | None = None


@dataclass
class Dotenv:
    shown: str  # as the user named it
    real: Path  # what a rewrite replaces: the file, not a symlink to it
    raw: bytes
    mode: int
    bom: bytes
    text: str
    assignments: list[Assignment]
    variables: dict[str, Variable]


@click.command(name="import")
@click.argument("file", metavar="FILE")
@click.option(
    "--dry-run", is_flag=True, help="Show what would be stored; store and rewrite nothing."
)
@click.option(
    "--rewrite",
    is_flag=True,
    help="Once every key is stored, replace their lines in FILE with a comment (atomically).",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="VAR=SERVICE",
    help="Import VAR as SERVICE's key (repeatable); overrides the service's own variable.",
)
@pass_state
@one_line_errors
def import_(
    state: State, file: str, dry_run: bool, rewrite: bool, mappings: tuple[str, ...]
) -> None:
    """Move the API keys of a .env file into the vault, in one transaction.

    Each variable that is a service's key variable (OPENAI_API_KEY for openai:
    vaultd services lists the services) or is named by --map VAR=SERVICE
    becomes a credential named "imported", or the variable's name in lower case
    if the service has an "imported" key already. Other variables are listed as
    skipped. Nothing is stored unless every key can be: a key that is empty, a
    placeholder or a ${REFERENCE}, or a line that is not NAME=value, stops it.
    Values are never printed. With --rewrite the lines of the stored keys are
    then replaced by a comment saying where each went; every other byte of the
    file stays as it was, and so does its mode.
    """
    config = state.config
    mapped = _parse_mappings(mappings, config)
    dotenv = _read_dotenv(file, config)
    _recognise(dotenv, mapped, config)
    moving = [v for v in dotenv.variables.values() if v.service is not None]
    _check_values(dotenv, moving)
    with opened(state) as vault:
        taken = {(c.service, c.name) for c in vault.credentials.list()}
        _choose_names(moving, taken)
        if not dry_run and moving:
            dek = vault.unlock()
            vault.credentials.add_many(
                dek,
                [NewCredential(service=v.service, name=v.name, secret=v.value) for v in moving],
            )
    _print_results(dotenv, dry_run)
    if dry_run:
        click.echo("dry run: nothing was stored or rewritten", err=True)
        return
    if not moving:
        click.echo(
            f"nothing to import: no variable in {dotenv.shown} is a service's key "
            "(--map VAR=SERVICE names one)",
            err=True,
        )
        return
    click.echo(
        f"stored {_keys(len(moving))} from {dotenv.shown} (vaultd list shows them)", err=True
    )
    if rewrite:
        _rewrite(dotenv, moving, config)
        click.echo(
            f"rewrote {dotenv.shown}: the lines of the stored keys now say where each went",
            err=True,
        )
    else:
        click.echo(
            f"the keys are still in {dotenv.shown}: delete their lines, "
            f"or run this again with --rewrite to have them replaced",
            err=True,
        )


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


# -- what the options say -------------------------------------------------------------


def _parse_mappings(pairs: Sequence[str], config: Config) -> dict[str, str]:
    mapped: dict[str, str] = {}
    for pair in pairs:
        var, sep, service = pair.partition("=")
        if not sep or not var or not service:
            raise click.BadParameter(f"{pair!r} is not VAR=SERVICE", param_hint="--map")
        if service not in config.services:
            raise click.ClickException(
                f"--map {printable(var)}={printable(service)}: "
                f"{unknown_service(printable(service), config.services)}; nothing was stored"
            )
        mapped[var] = service
    return mapped


# -- reading the file -----------------------------------------------------------------


def _own_paths(config: Config) -> tuple[set[Path], set[Path]]:
    """vaultd's own files and directories: never read as a .env (a symlink to the key, say)."""
    files = {config.key_file, config.db_path}
    dirs = {config.data_dir, config_home(os.environ)}
    if config.config_file is not None:
        files.add(config.config_file)
    return {Path(os.path.realpath(p)) for p in files}, {Path(os.path.realpath(d)) for d in dirs}


class _Refused(Exception):
    """Why a file is not read: the caller says what that means for the import."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _refuse(shown: str, why: str) -> click.ClickException:
    return click.ClickException(f"{printable(shown)} {why}; nothing was stored")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_safely(shown: str, config: Config) -> tuple[Path, bytes, int]:
    """The real path, the bytes and the mode of the regular file ``shown``.

    Opened without blocking (a FIFO with no writer would hang a plain open)
    and checked with fstat on what was opened, not on the name.
    """
    real = Path(os.path.realpath(shown))
    own_files, own_dirs = _own_paths(config)
    if real in own_files or any(d == real or d in real.parents for d in own_dirs):
        raise _Refused(f"is vaultd's own file or directory ({real}), not a .env file")
    try:
        fd = os.open(shown, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Refused("does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a Unix socket cannot be opened as a file
            raise _Refused("is a socket, not a .env file") from None
        raise _Refused(f"cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"is {_kind(st.st_mode)}, not a .env file")
        own_inodes = {(s.st_dev, s.st_ino) for s in _stats(own_files)}
        if (st.st_dev, st.st_ino) in own_inodes:
            raise _Refused("is one of vaultd's own files, not a .env file")
        if st.st_size > MAX_FILE_BYTES:
            raise _Refused(f"is larger than {MAX_FILE_BYTES // 1024} KiB: not a .env file")
        chunks: list[bytes] = []
        left = MAX_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 64 * 1024))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_FILE_BYTES:
            raise _Refused(f"is larger than {MAX_FILE_BYTES // 1024} KiB: not a .env file")
    finally:
        os.close(fd)
    return real, data, st.st_mode


def _stats(paths: set[Path]) -> list[os.stat_result]:
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            found.append(os.stat(path))
    return found


def _read_dotenv(shown: str, config: Config) -> Dotenv:
    try:
        real, raw, mode = _read_safely(shown, config)
    except _Refused as exc:
        raise _refuse(shown, exc.why) from None
    if b"\0" in raw:
        raise _refuse(shown, "is a binary file (it has NUL bytes), not a .env file")
    bom = BOM if raw.startswith(BOM) else b""
    try:
        text = raw[len(bom) :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(
            shown, f"is not UTF-8 text (byte {exc.start + len(bom)} is not): not a .env file"
        ) from None
    assignments = _assignments(shown, text)
    # interpolate=False: the values are stored as written. Expanding ${VAR}
    # would fill them from this process's environment (where another key may
    # sit) and store something the file does not say; such a value is refused
    # instead (_check_values).
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    variables: dict[str, Variable] = {}
    for a in assignments:
        value = values.get(a.key)
        if value is None:  # the parser's two views disagree: never guess
            raise _refuse(shown, f"line {a.line} could not be read as NAME=value")
        variables.setdefault(a.key, Variable(a.key, value)).lines.append(a.line)
    return Dotenv(shown, real, raw, mode, bom, text, assignments, variables)


def _assignments(shown: str, text: str) -> list[Assignment]:
    """Every ``NAME=value`` of ``text`` with where its text starts and ends, in order.

    python-dotenv's parser gives each binding's original text; these add up to
    the whole file, so a rewrite can keep every other byte of it.
    """
    found: list[Assignment] = []
    pos = 0
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        match = _LEADING_SPACE.match(original)
        lead = match.end() if match else 0
        line = binding.original.line + len(_NEWLINE.findall(original[:lead]))
        start, pos = pos + lead, pos + len(original)
        if binding.error or (binding.key is not None and binding.value is None):
            own = original[lead:]
            why = "there is no '='"
            if "=" in own:
                why = "it could not be read (an unclosed quote?)"
            raise click.ClickException(
                f"{printable(shown)}, line {line}: {why}; each line is NAME=value or a "
                "# comment; nothing was stored"
            )
        if binding.key is not None:
            found.append(Assignment(binding.key, start, pos, line))
    if pos != len(text):  # every character belongs to a binding, or a rewrite could lose some
        raise _refuse(shown, "could not be read as a whole")
    return found


# -- what goes where ------------------------------------------------------------------


def _recognise(dotenv: Dotenv, mapped: Mapping[str, str], config: Config) -> None:
    for var in mapped:
        if var not in dotenv.variables:
            raise click.ClickException(
                f"--map {printable(var)}=...: {printable(dotenv.shown)} sets no variable "
                f"{printable(var)}; nothing was stored"
            )
    owners: dict[str, list[str]] = {}
    for service in config.services.values():
        if service.env_key:
            owners.setdefault(service.env_key, []).append(service.name)
    for v in dotenv.variables.values():
        if v.key in mapped:
            v.service = mapped[v.key]
        elif len(owners.get(v.key, [])) == 1:
            v.service = owners[v.key][0]
        elif v.key in owners:
            v.skipped = (
                f"skipped: the key variable of {', '.join(owners[v.key])} "
                f"(--map {v.key}=SERVICE chooses)"
            )
        else:
            v.skipped = f"skipped: not a known service's key (--map {v.key}=SERVICE)"


def _where(v: Variable) -> str:
    return f"{printable(v.key)} (line {v.lines[-1]})"


def _check_values(dotenv: Dotenv, moving: Sequence[Variable]) -> None:
    """Every key to store is one ``vaultd add`` would take; else one line naming them all."""
    problems: list[str] = []
    for v in moving:
        value = v.value
        if not value:
            problems.append(f"{_where(v)} has an empty value")
        elif "\n" in value or "\r" in value:
            problems.append(f"{_where(v)} has a value of several lines, not a key")
        elif "${" in value or value.startswith("$"):
            problems.append(
                f"{_where(v)} refers to another variable ($...), which vaultd import does "
                "not expand: put the key itself there"
            )
        elif (mistake := secret_mistake(value)) is not None:
            problems.append(f"{_where(v)}: its value {mistake}")
        else:
            try:
                check_secret(value)
            except ValidationError as exc:
                problems.append(
                    f"{_where(v)}: its value " + "; ".join(e.message for e in exc.errors)
                )
    if problems:
        raise click.ClickException(f"{'; '.join(problems)}; nothing was stored")


def _choose_names(moving: Sequence[Variable], taken: set[tuple[str, str]]) -> None:
    for v in moving:
        assert v.service is not None
        candidates = [DEFAULT_NAME, v.key.lower()]
        free = [n for n in candidates if (v.service, n) not in taken]
        if not free:
            raise click.ClickException(
                f"{printable(v.key)}: {v.service} has keys named {DEFAULT_NAME} and "
                f"{printable(v.key.lower())} already; remove or rename one "
                f"(vaultd rm {v.service}/{DEFAULT_NAME}), then import again; nothing was stored"
            )
        v.name = free[0]
        taken.add((v.service, v.name))


def _print_results(dotenv: Dotenv, dry_run: bool) -> None:
    rows = []
    for v in dotenv.variables.values():
        if v.service is not None:
            result = "would be stored" if dry_run else "stored"
            if len(v.lines) > 1:
                where = ", ".join(str(n) for n in v.lines)
                result += f" (set on lines {where}: the last one wins)"
            rows.append([v.key, v.service, v.name or "-", result])
        else:
            rows.append([v.key, "-", "-", v.skipped or "skipped"])
    if rows:
        print_table(["VARIABLE", "SERVICE", "NAME", "RESULT"], rows)
    else:
        click.echo(f"{printable(dotenv.shown)} sets no variables", err=True)


# -- rewriting the file ---------------------------------------------------------------


def _rewrite(dotenv: Dotenv, moving: Sequence[Variable], config: Config) -> None:
    """Replace every line that set a stored key; the rest of the file stays byte for byte."""
    try:
        _, now_raw, _ = _read_safely(dotenv.shown, config)
        if now_raw != dotenv.raw:
            raise OSError(f"{dotenv.shown} changed while the keys were stored")
        _replace_file(dotenv.real, _rewritten(dotenv, moving), dotenv.mode)
    except (OSError, _Refused) as exc:
        why = exc.why if isinstance(exc, _Refused) else str(exc)
        raise click.ClickException(
            f"the keys are stored, but {printable(dotenv.shown)} was not rewritten ({why}): "
            "delete their lines by hand"
        ) from None


def _rewritten(dotenv: Dotenv, moving: Sequence[Variable]) -> bytes:
    where = {v.key: v for v in moving}
    parts: list[str] = []
    pos = 0
    for a in dotenv.assignments:
        v = where.get(a.key)
        if v is None:
            continue
        own = dotenv.text[a.start : a.end]
        match = _LINE_END.search(own)
        parts += [
            dotenv.text[pos : a.start],
            f"# {a.key} moved to vaultd ({v.service}/{v.name}); use: vaultd run -- CMD",
            match.group(1) if match else "",
        ]
        pos = a.end
    parts.append(dotenv.text[pos:])
    return dotenv.bom + "".join(parts).encode("utf-8")


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".vaultd-tmp")
    try:
        os.fchmod(fd, stat.S_IMODE(mode))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
