"""Where a passphrase comes from (DESIGN 7), never argv or a plain environment variable.

In order: the file named by ``--passphrase-file`` / ``$VAULTD_PASSPHRASE_FILE``
(an explicitly named file wins over the prompt, so scripts behave the same on
a terminal), else ``$CREDENTIALS_DIRECTORY/vaultd-passphrase`` (systemd's
``LoadCredential[Encrypted]=``), else a hidden prompt on the controlling
terminal (``/dev/tty``, as ssh and gpg do: stdin may carry the secret itself,
as in ``printf 'sk-...' | vaultd add openai main``).
A passphrase file must be private (0600, ours); its first line is used.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path

from vaultd.errors import CryptoError
from vaultd.fsperms import check_private

# Names of where a passphrase is found, not passphrases.
PASSPHRASE_FILE_ENV = "VAULTD_PASSPHRASE_FILE"  # noqa: S105
SYSTEMD_PASSPHRASE_CREDENTIAL = "vaultd-passphrase"  # noqa: S105
_MAX_FILE = 64 * 1024


def read_passphrase_file(path: Path) -> bytes:
    check_private(path, "passphrase file")
    try:
        with path.open("rb") as handle:
            first = handle.read(_MAX_FILE).split(b"\n", 1)[0].rstrip(b"\r")
    except FileNotFoundError:
        raise CryptoError(f"passphrase file {path} does not exist") from None
    except OSError as exc:
        raise CryptoError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if not first:
        raise CryptoError(f"passphrase file {path} is empty: the passphrase is its first line")
    return first


def terminal_available() -> bool:
    """Whether this process has a controlling terminal to ask on (getpass uses it)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _prompt(what: str, confirm: bool) -> bytes:
    value = getpass.getpass(f"{what}: ")
    if not value:
        raise CryptoError("no passphrase given")
    if confirm and getpass.getpass(f"{what} (again): ") != value:
        raise CryptoError("the two passphrases differ")
    return value.encode("utf-8")


def get_passphrase(
    explicit: Path | None,
    *,
    what: str = "Vault passphrase",
    confirm: bool = False,
    env: Mapping[str, str] | None = None,
    use_credentials: bool = True,
    no_source: str | None = None,
) -> bytes:
    """The passphrase from the first source that has one, or ``CryptoError``.

    ``no_source`` is what to say when there is none (no file and no terminal);
    by default, that the vault is locked and how to unlock it.
    """
    env = os.environ if env is None else env
    named = explicit or (Path(env[PASSPHRASE_FILE_ENV]) if env.get(PASSPHRASE_FILE_ENV) else None)
    if named is not None:
        return read_passphrase_file(named)
    creds = env.get("CREDENTIALS_DIRECTORY")
    if use_credentials and creds and (Path(creds) / SYSTEMD_PASSPHRASE_CREDENTIAL).exists():
        return read_passphrase_file(Path(creds) / SYSTEMD_PASSPHRASE_CREDENTIAL)
    if terminal_available():
        return _prompt(what, confirm)
    raise CryptoError(
        no_source
        or "this vault is locked by a passphrase: give --passphrase-file FILE "
        f"(or ${PASSPHRASE_FILE_ENV}), or run on a terminal to be asked"
    )
