"""[sources.NAME] is checked at load like the rest of the config (DESIGN 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultd.config import config_digest, load_config
from vaultd.errors import ConfigError

APPROLE = """
[sources.team]
url = "{url}"
auth = "approle"
role_id = "8b4c1f7e-role"
secret_id_file = "secret-id"
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(str(path), str(tmp_path / "data"), env=env or {"HOME": str(tmp_path)})


def test_a_source_is_parsed_with_its_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, APPROLE.format(url="https://bao.example.com:8200"))
    team = config.sources["team"]
    assert team.url == "https://bao.example.com:8200"
    assert (team.mount, team.prefix, team.type) == ("secret", "vaultd", "openbao")
    assert (team.refresh_interval, team.max_stale) == (300, 3600)
    # Relative to the config file's directory.
    assert team.secret_id_file == tmp_path / "secret-id"


def test_plain_http_only_to_loopback(tmp_path: Path) -> None:
    assert _load(tmp_path, APPROLE.format(url="http://127.0.0.1:8200")).sources["team"]
    with pytest.raises(ConfigError, match="https"):
        _load(tmp_path, APPROLE.format(url="http://bao.example.com:8200"))


@pytest.mark.parametrize(
    "url",
    ["https://user:pw@bao.example.com", "https://bao.example.com/v1", "ftp://bao", "https://b?x=1"],
)
def test_a_url_with_more_than_an_address_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"\[sources.team\] url"):
        _load(tmp_path, APPROLE.format(url=url))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prefix", "vaultd/../other"),
        ("prefix", "%2e%2e"),
        ("prefix", "a//b"),
        ("prefix", "/vaultd"),
        ("prefix", "vaultd/"),
        ("prefix", "va\\u0001ultd"),
        ("mount", ".."),
        ("mount", ""),
        ("mount", "secret/."),
        ("prefix", "a b"),
    ],
)
def test_hostile_kv_paths_are_refused_at_load(tmp_path: Path, key: str, value: str) -> None:
    text = APPROLE.format(url="https://bao.example.com") + f'{key} = "{value}"\n'
    with pytest.raises(ConfigError, match=rf"\[sources.team\] {key}"):
        _load(tmp_path, text)


def test_nested_prefix_is_allowed(tmp_path: Path) -> None:
    text = APPROLE.format(url="https://bao.example.com") + 'prefix = "teams/ml.keys"\n'
    assert _load(tmp_path, text).sources["team"].prefix == "teams/ml.keys"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('auth = "password"', "auth must be one of"),
        ('token_file = "x"', "token_file is for"),
        ('refresh_interval = "0s"', "longer than zero"),
        ('max_stale = "soon"', "max_stale"),
        ('ca_file = ""', "ca_file must not be empty"),
        ('colour = "blue"', "unknown key 'colour'"),
        ('type = "consul"', "type must be one of"),
    ],
)
def test_wrong_settings_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    text = APPROLE.format(url="https://bao.example.com")
    if extra.startswith("auth"):
        text = text.replace('auth = "approle"', extra)
    else:
        text += extra + "\n"
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_approle_needs_a_secret_id_from_somewhere(tmp_path: Path) -> None:
    text = APPROLE.format(url="https://b.example").replace('secret_id_file = "secret-id"\n', "")
    with pytest.raises(ConfigError, match="needs a secret_id_file"):
        _load(tmp_path, text)
    # systemd's LoadCredential=vaultd-source-team:... puts it here.
    creds = tmp_path / "creds"
    config = _load(tmp_path, text, env={"HOME": str(tmp_path), "CREDENTIALS_DIRECTORY": str(creds)})
    assert config.sources["team"].secret_id_file == creds / "vaultd-source-team"


def test_token_file_defaults_to_the_vault_token(tmp_path: Path) -> None:
    text = '[sources.me]\nurl = "https://b.example"\nauth = "token_file"\n'
    assert _load(tmp_path, text).sources["me"].token_file == tmp_path / ".vault-token"


@pytest.mark.parametrize("name", ["local", "a.b", "-x", "x" * 65])
def test_source_names_are_plain_and_not_local(tmp_path: Path, name: str) -> None:
    text = f'[sources."{name}"]\nurl = "https://b.example"\nauth = "token_file"\n'
    with pytest.raises(ConfigError, match="is not a source name"):
        _load(tmp_path, text)


def test_a_source_changes_the_config_digest(tmp_path: Path) -> None:
    without = _load(tmp_path, "")
    with_source = _load(tmp_path, APPROLE.format(url="https://b.example"))
    assert config_digest(without) != config_digest(with_source)


def test_a_reload_keeps_the_sources_the_daemon_started_with(tmp_path: Path) -> None:
    from vaultd.daemon.reload import keeping_restart_keys

    running = _load(tmp_path, APPROLE.format(url="https://b.example"))
    new = _load(tmp_path, APPROLE.format(url="https://c.example"))
    effective, pending = keeping_restart_keys(running, new)
    assert "[sources]" in pending
    assert effective.sources == running.sources
    same, none = keeping_restart_keys(running, running)
    assert none == () and same.sources == running.sources
