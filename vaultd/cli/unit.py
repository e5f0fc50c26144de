"""``vaultd systemd-unit``: the user unit of systemd/vaultd.service, running this vaultd.

The unit ships inside the package (``vaultd/data/systemd/vaultd.service``, a
copy of ``systemd/vaultd.service`` that a test keeps identical), so an
installed vaultd has it without a checkout. Only its ``ExecStart=`` line is
rewritten: the hardening is the one `systemd-analyze security` scores in the
tests, whatever path vaultd was installed to.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from vaultd.config import Config
from vaultd.errors import VaultdError

UNIT_RESOURCE = "data/systemd/vaultd.service"
_EXEC_START = re.compile(r"(?m)^ExecStart=.*$")
# Words systemd reads as they are; any other is quoted (systemd.syntax(7)).
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./+,:@=-]+")


def shipped_unit() -> str:
    return resources.files("vaultd").joinpath(UNIT_RESOURCE).read_text(encoding="utf-8")


def this_vaultd(executable: str | None = None) -> list[str]:
    """The command line that runs this vaultd: its ``vaultd`` script beside the
    interpreter (a venv's ``bin/``, pipx's), else ``PYTHON -m vaultd``.

    Absolute, and not resolved: a venv's ``python`` is a symlink to the
    system's, which without the venv beside it would not find vaultd.
    """
    python = os.path.abspath(executable or sys.executable)
    if not python or not os.path.isfile(python):
        raise VaultdError("cannot tell which Python runs vaultd (sys.executable is unset)")
    script = Path(python).with_name("vaultd")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    # -P: the unit's working directory (the home directory) is not put on
    # sys.path, so a vaultd/ planted there is not what -m runs.
    return [python, "-P", "-m", "vaultd"]


def unit_word(word: str, *, executable: bool = False) -> str:
    """``word`` as one word of a unit's command line, meaning itself.

    ``%`` (a specifier, anywhere) is doubled, and so is ``$`` in an argument
    (a variable there; systemd does not expand one in the executable's
    path); a word with other characters is double-quoted with C escapes.
    An executable's path may not hold quotes or backslashes at all.
    """
    if any(ord(c) < 0x20 or c == "\x7f" for c in word):
        raise VaultdError(f"cannot name {word!r} in a unit file: it has control characters")
    if executable and set("\"'\\") & set(word):
        # systemd refuses such an executable ("contains special characters").
        raise VaultdError(
            f"systemd cannot run {word}: it refuses quotes and backslashes in an "
            "executable's path; install vaultd where the path has none"
        )
    word = word.replace("%", "%%")
    if not executable:
        word = word.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(command: Sequence[str]) -> str:
    """The shipped unit with ``ExecStart=`` running ``command serve``."""
    text = shipped_unit()
    executable, *arguments = [*command, "serve"]
    line = "ExecStart=" + " ".join(
        [unit_word(executable, executable=True), *(unit_word(word) for word in arguments)]
    )
    new, count = _EXEC_START.subn(lambda _match: line, text)
    if count != 1:
        raise VaultdError(f"the packaged unit has {count} ExecStart= lines, not one")
    return new


def mismatches(config: Config, home: Path) -> list[str]:
    """What in ``config`` the unit's service would not see: a line for each.

    The service runs with no ``--config``, ``--data-dir`` or ``VAULTD_*``
    variable, reads ``~/.config/vaultd/config.toml``, and may write only
    ``~/.local/share/vaultd`` (``ReadWritePaths=``).
    """
    lines = []
    config_file = home / ".config" / "vaultd" / "config.toml"
    if config.config_file is not None and config.config_file.absolute() != config_file:
        lines.append(
            f"the unit's service reads {config_file}, not {config.config_file}: "
            "move the config there, or add --config to ExecStart="
        )
    data_dir = home / ".local" / "share" / "vaultd"
    if config.data_dir.absolute() != data_dir:
        lines.append(
            f"the vault here is in {config.data_dir}, but the unit's service may write only "
            f"{data_dir}: change ReadWritePaths= (and the config's [storage] data_dir) to match"
        )
    return lines
