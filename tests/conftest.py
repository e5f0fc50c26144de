"""Fixtures for every test: an isolated home, and the CLI on a real database file.

Helpers live in tests/support/, fixtures that build on them in tests/fixtures.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.cli import CLI
from vaultd.core import keysource
from vaultd.core.vault import Vault

# The fixtures every layer's tests share: the API on a real socket, a fake
# upstream with vaultd's proxy in front of it (helpers: tests/support/).
pytest_plugins = ["tests.fixtures"]

_ISOLATED_VARS = (
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "VAULTD_CONFIG",
    "VAULTD_DATA_DIR",
    "VAULTD_URL",
    "VAULTD_PASSPHRASE_FILE",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real user's config, data or key."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for var in _ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)
    # Nor does any in-process test ask the developer's terminal for a passphrase.
    monkeypatch.setattr(keysource, "terminal_available", lambda: False)
    return home


@pytest.fixture
def cli_env(isolated_home: Path) -> CLI:
    return CLI(isolated_home, CliRunner())


@pytest.fixture
def initialised(cli_env: CLI) -> CLI:
    cli_env.ok("init")
    return cli_env


@pytest.fixture
def opened_vault(initialised: CLI) -> Iterator[Vault]:
    vault = initialised.vault()
    try:
        yield vault
    finally:
        vault.close()
