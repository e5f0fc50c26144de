"""The ``vaultd`` CLI run in-process against an isolated home and a real database file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from vaultd.cli.main import cli
from vaultd.config import Config, load_config
from vaultd.core.vault import Vault, open_vault


@dataclass
class CLI:
    """Runs ``vaultd`` verbs in-process against the isolated home."""

    home: Path
    runner: CliRunner

    @property
    def config(self) -> Config:
        return load_config()

    @property
    def key_file(self) -> Path:
        return self.home / ".config" / "vaultd" / "master.key"

    @property
    def db_path(self) -> Path:
        return self.home / ".local" / "share" / "vaultd" / "vault.db"

    def run(self, *args: str, input: str | bytes | None = None) -> Result:
        return self.runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    def ok(self, *args: str, input: str | bytes | None = None) -> Result:
        result = self.run(*args, input=input)
        assert result.exit_code == 0, result.output
        return result

    def fails(self, *args: str, input: str | bytes | None = None, code: int = 1) -> str:
        """The one error line of a verb that must fail cleanly."""
        result = self.run(*args, input=input)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        if code == 1:
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith("Error: "), result.stderr
        return result.stderr.strip()

    def add(self, service: str, name: str, secret: str, *extra: str) -> dict[str, Any]:
        out = self.ok("add", service, name, "--json", *extra, input=secret + "\n").stdout
        item: dict[str, Any] = json.loads(out)
        return item

    def listing(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.ok("list", "--json").stdout)
        return items

    def vault(self) -> Vault:
        return open_vault(self.config)


def file_bytes_under(*roots: Path) -> dict[Path, bytes]:
    """Every regular file under ``roots`` with its bytes (the vault's whole footprint)."""
    found: dict[Path, bytes] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                found[path] = path.read_bytes()
    return found
