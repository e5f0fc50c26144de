"""The metering package stays pure: no HTTP library, no I/O, small modules."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import vaultd.proxy.metering

PACKAGE = Path(vaultd.proxy.metering.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
# The standard library, msgspec (a JSON decoder, no I/O), and the package itself.
ALLOWED = {"__future__", "enum", "json", "re", "typing", "collections", "msgspec"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_standard_library_is_imported() -> None:
    assert len(MODULES) == 7  # the control: the glob found the package
    for path in MODULES:
        for name in imported(path):
            top = name.split(".")[0]
            assert name.startswith("vaultd.proxy.metering") or top in ALLOWED, (path.name, name)


def test_modules_stay_small() -> None:
    for path in MODULES:
        assert len(path.read_text(encoding="utf-8").splitlines()) < 400, path.name


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b' {"usage": {"prompt_tokens": 1}}\n', True),
        (b"[1, 2]", True),
        (b'{"a": 1, "a": 2}', True),  # the last one wins, as in json
        (b"", False),
        (b"   ", False),
        (b'{"a": 1} {"b": 2}', False),
        (b'{"a": 1} x', False),
        (b'{"a":', False),
        (b"\xff{}", False),
        (b"[" * 100_000, False),
        (b'{"a": NaN}', False),
        (b'{"a": "\\ud800"}', False),  # a lone surrogate
        (b'{"a": "\x01"}', False),  # a control character in a string
    ],
)
def test_decode_takes_one_json_value(body: bytes, ok: bool) -> None:
    """What the readers decode: one UTF-8 JSON value and nothing after it."""
    from vaultd.proxy.metering import readers

    if ok:
        assert readers.decode(body) == json.loads(body)
        assert readers.decode(bytearray(body)) == json.loads(body)
    else:
        with pytest.raises(readers.Invalid):
            readers.decode(body)


def test_a_count_past_64_bits_is_invalid_not_rounded() -> None:
    """msgspec reads such an integer whole: no count takes one past 2**53."""
    from vaultd.proxy.metering import readers

    body = b'{"usage": {"prompt_tokens": 99999999999999999999999, "completion_tokens": 1}}'
    with pytest.raises(readers.Invalid):
        readers.read_json("openai", readers.decode(body))
