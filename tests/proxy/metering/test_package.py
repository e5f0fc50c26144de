"""The metering package stays pure: no HTTP library, no I/O, small modules."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import vaultd.proxy.metering

PACKAGE = Path(vaultd.proxy.metering.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
# The standard library only, and the package itself.
ALLOWED = {"__future__", "enum", "json", "re", "typing", "collections"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_standard_library_is_imported() -> None:
    assert len(MODULES) == 6  # the control: the glob found the package
    for path in MODULES:
        for name in imported(path):
            top = name.split(".")[0]
            assert name.startswith("vaultd.proxy.metering") or top in ALLOWED, (path.name, name)


def test_modules_stay_small() -> None:
    for path in MODULES:
        assert len(path.read_text(encoding="utf-8").splitlines()) < 400, path.name


@pytest.mark.parametrize("scanner", ["direct", "public"])
@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b' {"usage": {"prompt_tokens": 1}}\n', True),
        (b"[1, 2]", True),
        (b"", False),
        (b"   ", False),
        (b'{"a": 1} {"b": 2}', False),
        (b'{"a": 1} x', False),
        (b'{"a":', False),
        (b"\xff{}", False),
        (b"[" * 100_000, False),
    ],
)
def test_decode_takes_one_json_value_on_either_path(
    monkeypatch: pytest.MonkeyPatch, scanner: str, body: bytes, ok: bool
) -> None:
    """The scanner called directly (checked at import) and the public decoder it
    falls back to accept and refuse the same bodies."""
    from vaultd.proxy.metering import readers

    if scanner == "public":
        monkeypatch.setattr(readers, "_SCAN", None)
    else:
        assert readers._SCAN is not None  # the check at import passed here
    if ok:
        assert readers.decode(body) == json.loads(body)
    else:
        with pytest.raises(readers.Invalid):
            readers.decode(body)
