"""The README's promises, kept true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)


def test_readme_opens_with_the_two_setup_commands() -> None:
    first, second = readme_commands()[:2]
    assert "pip install -e ." in first and first.endswith("vaultd serve")
    assert "pip install -e '.[test]'" in second and "pytest" in second


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
