"""The docs kept honest: config.example.toml and the CLI's help texts (as sqlite-utils does)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

import click
import pytest

from vaultd.cli.main import cli
from vaultd.config import SCHEMA, config_home, data_home, load_config
from vaultd.services import SERVICE_KEYS, Service
from vaultd.sourceconfig import SOURCE_KEYS

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
# A commented-out setting or table header: "# key = value" or "# [section]".
# Prose comments never take either form.
COMMENTED_SETTING = re.compile(r"^# (\[[^\]\s]+\]|[a-z_]+ = .*)$")


def uncommented(text: str) -> str:
    return "\n".join(
        match.group(1) if (match := COMMENTED_SETTING.match(line)) else line
        for line in text.splitlines()
    )


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (section, key)
        for section, table in doc.items()
        if section not in ("services", "prices", "policies", "sources")
        for key in table
    }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # "~" in the example expands against the process's HOME: make it the test's.
    home = tmp_path / "docs-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return {"HOME": str(home)}


@pytest.fixture
def full_doc() -> dict[str, Any]:
    return tomllib.loads(uncommented(EXAMPLE.read_text(encoding="utf-8")))


def test_uncommenting_finds_the_commented_settings() -> None:
    # The control for the tests below: the regex really does uncomment things.
    text = EXAMPLE.read_text(encoding="utf-8")
    assert ("storage", "data_dir") not in documented(tomllib.loads(text))
    assert ("storage", "data_dir") in documented(tomllib.loads(uncommented(text)))


def test_example_documents_exactly_the_schema_keys(full_doc: dict[str, Any]) -> None:
    schema = {(section, key) for section, keys in SCHEMA.items() for key in keys}
    assert documented(full_doc) == schema


def test_example_documents_every_service_key(full_doc: dict[str, Any]) -> None:
    tables = full_doc["services"].values()
    assert set().union(*(table.keys() for table in tables)) == set(SERVICE_KEYS)
    # And one complete example shows them all together.
    assert any(set(table) == set(SERVICE_KEYS) for table in tables)


def test_example_documents_a_price_override_with_every_key(
    full_doc: dict[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    (name, table), *_ = full_doc["prices"].items()
    assert set(table) == {
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
    }
    path = tmp_path / "config.toml"
    path.write_text(uncommented(EXAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    price = load_config(config_path=str(path), env=env).prices[name]
    assert (price.input_per_mtok, price.output_per_mtok) == (
        table["input_per_mtok"],
        table["output_per_mtok"],
    )


def test_example_documents_every_source_key_and_loads(
    full_doc: dict[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    tables = full_doc["sources"]
    assert set().union(*(table.keys() for table in tables.values())) == set(SOURCE_KEYS)
    path = tmp_path / "config.toml"
    path.write_text(uncommented(EXAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    sources = load_config(config_path=str(path), env=env).sources
    assert set(sources) == set(tables)
    # The values it calls defaults are the defaults.
    team = sources["team"]
    assert (team.mount, team.prefix, team.refresh_interval, team.max_stale) == (
        "secret",
        "vaultd",
        300,
        3600,
    )
    assert sources["me"].token_file == Path(env["HOME"]) / ".vault-token"


def test_computed_defaults_are_commented_out_and_literal_ones_are_shown() -> None:
    active = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section, keys in SCHEMA.items():
        for key, (_parse, default) in keys.items():
            shown = key in active.get(section, {})
            assert shown == (default is not None), f"[{section}] {key}"
    assert "services" not in active
    assert "prices" not in active
    assert "sources" not in active


def test_documented_values_are_the_real_defaults(full_doc: dict[str, Any]) -> None:
    for section, keys in SCHEMA.items():
        for key, (parse, default) in keys.items():
            if default is not None:
                where = f"[{section}] {key}"
                assert parse(where, full_doc[section][key]) == parse(where, default), where


def test_example_loads_and_equals_the_defaults(env: dict[str, str]) -> None:
    config = load_config(config_path=str(EXAMPLE), env=env)
    assert config.config_file == EXAMPLE
    assert replace(config, config_file=None) == load_config(env=env)


def test_example_with_everything_uncommented_loads(
    tmp_path: Path, env: dict[str, str], full_doc: dict[str, Any]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(uncommented(EXAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    config = load_config(config_path=str(path), env=env)
    # The commented-out paths are the computed defaults they claim to be.
    assert config.data_dir == data_home(env)
    assert config.key_file == config_home(env) / "master.key"
    # The service example's values are the defaults it says they are, for every
    # key that has one.
    example = config.services["example"]
    defaults = {f.name: f.default for f in fields(Service) if f.default is not MISSING}
    defaults["headers"] = {}
    for key in set(full_doc["services"]["example"]) & set(defaults) - {"env_key", "env_base_url"}:
        value = getattr(example, key)
        assert (dict(value) if key == "headers" else value) == defaults[key], key


# -- CLI help ------------------------------------------------------------------------


def commands(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        # Through list_commands/get_command: the top group loads its verbs lazily.
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from commands(sub, (*path, name))


ALL_COMMANDS = dict(commands(cli, ("vaultd",)))


def test_the_walk_finds_nested_commands() -> None:
    assert "vaultd session create" in ALL_COMMANDS
    assert len(ALL_COMMANDS) > 5


@pytest.mark.parametrize("name", list(ALL_COMMANDS))
def test_every_command_has_help(name: str) -> None:
    command = ALL_COMMANDS[name]
    assert command.help is not None and command.help.strip(), f"{name} has no help text"
    assert command.get_short_help_str().strip()
    rendered = " ".join(command.get_help(click.Context(command, info_name=name)).split())
    assert " ".join(command.help.split()[:6]) in rendered


@pytest.mark.parametrize("name", list(ALL_COMMANDS))
def test_every_option_has_help(name: str) -> None:
    missing = [
        param.name
        for param in ALL_COMMANDS[name].params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not missing, f"{name}: options without help: {missing}"
