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


def test_the_foreground_serve_says_to_open_a_second_terminal() -> None:
    text = (ROOT / "README.md").read_text()
    after_serve = text.split("vaultd serve\n```", 1)[1].split("```", 1)[0]
    assert "leave it running" in after_serve and "second terminal" in after_serve


def test_no_example_pipes_a_literal_into_add_or_rotate() -> None:
    """Copied as they are, the examples never store a placeholder such as `sk-proj-...`."""
    lines = [
        line.split("#", 1)[0]
        for block in readme_commands()
        for line in block.splitlines()
        if re.search(r"\bvaultd (add|rotate)\b", line)
    ]
    assert lines
    for line in lines:
        feeder = line.partition("|")[0] if "|" in line else ""
        assert not re.search(r"\b(printf|echo)\b|<<", feeder), line
