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


def lint_with_import(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the package in which ``module`` (a path) gains ``line``."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "vaultd", tmp_path / "vaultd", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    changed = tmp_path / "vaultd" / module
    changed.write_text(changed.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout
    return done


def test_a_core_module_that_imports_aiohttp_breaks_the_rules(tmp_path: Path) -> None:
    done = lint_with_import(tmp_path, "core/sessions.py", "import aiohttp")
    assert "No HTTP below the HTTP layer" in done.stdout
    assert "vaultd.core.sessions -> aiohttp" in done.stdout, done.stdout


def test_a_store_module_that_imports_the_core_breaks_the_layers(tmp_path: Path) -> None:
    done = lint_with_import(tmp_path, "store/audit.py", "import vaultd.core.vault")
    assert "vaultd.store is not allowed to import vaultd.core" in done.stdout, done.stdout


def test_click_outside_the_cli_breaks_the_rules(tmp_path: Path) -> None:
    done = lint_with_import(tmp_path, "proxy/forward.py", "import click")
    assert "click only in the CLI" in done.stdout
    assert "vaultd.proxy.forward -> click" in done.stdout, done.stdout
