"""The layer rules of pyproject.toml's [tool.importlinter], checked as part of the suite.

Each test runs ``lint-imports`` as a user would; the second shows the rules
have teeth: the same check on a copy of the package in which one core module
imports aiohttp fails, naming the contract and the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_layer_contract_is_kept() -> None:
    done = lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout
    assert "Contracts: 4 kept, 0 broken." in done.stdout, done.stdout


def test_a_core_module_that_imports_aiohttp_breaks_the_rules(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "vaultd", tmp_path / "vaultd", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    sessions = tmp_path / "vaultd" / "core" / "sessions.py"
    sessions.write_text(sessions.read_text() + "\nimport aiohttp  # noqa\n")
    done = lint_imports(tmp_path, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No HTTP below the HTTP layer" in done.stdout
    assert "BROKEN" in done.stdout
    assert "vaultd.core.sessions -> aiohttp" in done.stdout, done.stdout


def test_a_store_module_that_imports_the_core_breaks_the_layers(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "vaultd", tmp_path / "vaultd", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    audit = tmp_path / "vaultd" / "store" / "audit.py"
    audit.write_text(audit.read_text() + "\nimport vaultd.core.vault  # noqa\n")
    done = lint_imports(tmp_path, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "vaultd.store is not allowed to import vaultd.core" in done.stdout, done.stdout
