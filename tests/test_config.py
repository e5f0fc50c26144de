"""Configuration: XDG paths, overrides, the TOML schema and service tables (DESIGN 2).

Every ``load_config`` call gets an explicit ``env`` with ``HOME`` under
``tmp_path`` and no XDG variables, so nothing here reads the real home.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import replace
from pathlib import Path

import pytest

from vaultd.config import SCHEMA, Config, config_digest, load_config, setting_items
from vaultd.errors import ConfigError
from vaultd.services import BUILTINS

DAY = 86400


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "user-home"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {"HOME": str(home)}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, env: dict[str, str], text: str | bytes) -> Config:
    path = write(tmp_path / "etc" / "config.toml", text)
    return load_config(config_path=str(path), env=env)


def config_error(tmp_path: Path, env: dict[str, str], text: str | bytes) -> str:
    """The message of the one ``ConfigError`` this config text causes; checked to be one line."""
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, env, text)
    message = str(info.value)
    assert message
    assert len(message.splitlines()) == 1, message
    assert "\r" not in message and "\n" not in message
    return message


# -- paths -----------------------------------------------------------------------


def test_xdg_defaults_under_home_and_no_file_means_all_defaults(
    home: Path, env: dict[str, str]
) -> None:
    config = load_config(env=env)
    assert config.config_file is None
    assert config.data_dir == home / ".local" / "share" / "vaultd"
    assert config.db_path == home / ".local" / "share" / "vaultd" / "vault.db"
    assert config.key_file == home / ".config" / "vaultd" / "master.key"
    assert (config.host, config.port) == ("127.0.0.1", 3978)
    assert config.allowed_hosts == () and config.allowed_origins == ()
    assert (config.default_ttl, config.max_ttl) == (8 * 3600, 365 * DAY)
    assert (config.connect_timeout, config.read_timeout) == (10, 300)
    assert config.max_request_body == 32 * 1024 * 1024
    assert config.usage_flush_interval == 1
    assert (config.audit_max_rows, config.audit_max_age) == (100_000, 90 * DAY)
    assert (config.ui_enabled, config.ui_session_ttl) == (True, 3600)
    assert dict(config.services) == dict(BUILTINS)


def test_default_config_file_is_read_from_xdg_config_home(home: Path, env: dict[str, str]) -> None:
    path = write(home / ".config" / "vaultd" / "config.toml", "[server]\nport = 4000\n")
    config = load_config(env=env)
    assert config.port == 4000
    assert config.config_file == path


def test_absolute_xdg_variables_move_config_data_and_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    write(tmp_path / "cfg" / "vaultd" / "config.toml", "[server]\nport = 4001\n")
    config = load_config(env=env)
    assert config.port == 4001
    assert config.data_dir == tmp_path / "data" / "vaultd"
    assert config.key_file == tmp_path / "cfg" / "vaultd" / "master.key"


def test_relative_xdg_variables_are_ignored(
    tmp_path: Path, home: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A config that would fail to load sits where the relative value points.
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rel-cfg" / "vaultd" / "config.toml", "[nonsense]\n")
    env |= {"XDG_CONFIG_HOME": "rel-cfg", "XDG_DATA_HOME": "rel-data"}
    config = load_config(env=env)
    assert config.config_file is None
    assert config.data_dir == home / ".local" / "share" / "vaultd"
    assert config.key_file == home / ".config" / "vaultd" / "master.key"


@pytest.mark.parametrize("value", ["", "relative/home"])
def test_empty_or_relative_home_uses_the_password_database(value: str) -> None:
    real = Path(pwd.getpwuid(os.getuid()).pw_dir)
    config = load_config(env={"HOME": value})
    assert config.data_dir == real / ".local" / "share" / "vaultd"
    assert config.key_file == real / ".config" / "vaultd" / "master.key"


@pytest.mark.parametrize("winner", ["argument", "env", "file", "xdg"])
def test_data_dir_precedence(tmp_path: Path, home: Path, env: dict[str, str], winner: str) -> None:
    layers = ["argument", "env", "file", "xdg"]
    present = layers[layers.index(winner) :]
    text = f'[storage]\ndata_dir = "{tmp_path / "from-file"}"\n' if "file" in present else ""
    path = write(tmp_path / "etc" / "config.toml", text)
    if "env" in present:
        env["VAULTD_DATA_DIR"] = str(tmp_path / "from-env")
    argument = str(tmp_path / "from-argument") if "argument" in present else None
    config = load_config(config_path=str(path), data_dir=argument, env=env)
    expected = {
        "argument": tmp_path / "from-argument",
        "env": tmp_path / "from-env",
        "file": tmp_path / "from-file",
        "xdg": home / ".local" / "share" / "vaultd",
    }[winner]
    assert config.data_dir == expected


def test_config_path_argument_wins_over_vaultd_config(tmp_path: Path, env: dict[str, str]) -> None:
    by_argument = write(tmp_path / "a.toml", "[server]\nport = 5001\n")
    by_env = write(tmp_path / "b.toml", "[server]\nport = 5002\n")
    env["VAULTD_CONFIG"] = str(by_env)
    assert load_config(config_path=str(by_argument), env=env).port == 5001
    config = load_config(env=env)
    assert config.port == 5002
    assert config.config_file == by_env


def test_vaultd_config_wins_over_the_xdg_default(
    tmp_path: Path, home: Path, env: dict[str, str]
) -> None:
    write(home / ".config" / "vaultd" / "config.toml", "[server]\nport = 5003\n")
    env["VAULTD_CONFIG"] = str(write(tmp_path / "b.toml", "[server]\nport = 5004\n"))
    assert load_config(env=env).port == 5004


def test_explicit_config_file_that_does_not_exist_is_an_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_path=str(missing), env=env)
    env["VAULTD_CONFIG"] = str(missing)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env=env)


def test_config_path_that_is_a_directory_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(config_path=str(tmp_path), env=env)


def test_systemd_credential_wins_for_the_key_file_when_present(
    tmp_path: Path, env: dict[str, str]
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    path = write(tmp_path / "etc" / "config.toml", f'[crypto]\nkey_file = "{tmp_path / "k"}"\n')
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    # No credential file yet: the configured key file is used.
    assert load_config(config_path=str(path), env=env).key_file == tmp_path / "k"
    write(creds / "vaultd-master-key", b"\x00" * 32)
    config = load_config(config_path=str(path), env=env)
    assert config.key_file == creds / "vaultd-master-key"


def test_relative_paths_in_the_file_resolve_against_its_directory(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = '[storage]\ndata_dir = "data"\n[crypto]\nkey_file = "keys/master.key"\n'
    config = load_text(tmp_path, env, text)
    assert config.data_dir == tmp_path / "etc" / "data"
    assert config.key_file == tmp_path / "etc" / "keys" / "master.key"


def test_durations_sizes_and_lists_are_parsed(tmp_path: Path, env: dict[str, str]) -> None:
    config = load_text(
        tmp_path,
        env,
        """
        [server]
        host = "::1"
        port = 0
        allowed_hosts = ["vaultd.internal:3978"]
        allowed_origins = ["http://localhost:5173"]
        [sessions]
        default_ttl = "1h30m"
        max_ttl = "2w"
        [proxy]
        connect_timeout = "90s"
        read_timeout = "15m"
        max_request_body = "512KiB"
        usage_flush_interval = 5
        [audit]
        max_rows = 10
        max_age = "1w"
        """,
    )
    assert (config.host, config.port) == ("::1", 0)
    assert config.allowed_hosts == ("vaultd.internal:3978",)
    assert config.allowed_origins == ("http://localhost:5173",)
    assert (config.default_ttl, config.max_ttl) == (5400, 14 * DAY)
    assert (config.connect_timeout, config.read_timeout) == (90, 900)
    assert config.max_request_body == 512 * 1024
    assert config.usage_flush_interval == 5
    assert (config.audit_max_rows, config.audit_max_age) == (10, 7 * DAY)


def test_schema_key_names_are_unique_across_sections() -> None:
    # parse_settings flattens [section] key into one dict by key name alone, so
    # the same name in two sections would silently overwrite one with the other.
    names = [key for keys in SCHEMA.values() for key in keys]
    assert len(names) == len(set(names))


# -- bad settings: one ConfigError, one line, naming the key -----------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[bogus]\nx = 1\n", ["bogus"]),
        ("top = 1\n", ["top"]),
        ("server = 1\n", ["server"]),
        ("[server]\nbogus = 1\n", ["bogus", "server"]),
        ('[server]\nport = "abc"\n', ["port"]),
        ("[server]\nport = true\n", ["port"]),
        ("[server]\nport = 70000\n", ["port"]),
        ("[server]\nport = -1\n", ["port"]),
        ("[server]\nport = 80.5\n", ["port"]),
        ("[server]\nhost = 1\n", ["host"]),
        ('[server]\nhost = "a\\nb"\n', ["host"]),
        ('[server]\nallowed_hosts = "x"\n', ["allowed_hosts"]),
        ('[server]\nallowed_hosts = ["ok", 3]\n', ["allowed_hosts"]),
        ("[server]\nallowed_origins = {}\n", ["allowed_origins"]),
        ('[storage]\ndata_dir = ""\n', ["data_dir"]),
        ("[crypto]\nkey_file = 1\n", ["key_file"]),
        ('[sessions]\ndefault_ttl = "8 hours"\n', ["default_ttl"]),
        ('[sessions]\ndefault_ttl = "0s"\n', ["default_ttl"]),
        ("[sessions]\ndefault_ttl = true\n", ["default_ttl"]),
        ('[sessions]\nmax_ttl = "1y"\n', ["max_ttl"]),
        ('[sessions]\ndefault_ttl = "30d"\nmax_ttl = "1d"\n', ["default_ttl", "max_ttl"]),
        ('[proxy]\nconnect_timeout = "soon"\n', ["connect_timeout"]),
        ("[proxy]\nread_timeout = -5\n", ["read_timeout"]),
        ('[proxy]\nmax_request_body = "lots"\n', ["max_request_body"]),
        ("[proxy]\nmax_request_body = 0\n", ["max_request_body"]),
        ("[proxy]\nusage_flush_interval = 1.5\n", ["usage_flush_interval"]),
        ("[audit]\nmax_rows = 0\n", ["max_rows"]),
        ('[audit]\nmax_rows = "many"\n', ["max_rows"]),
        ('[audit]\nmax_age = "forever"\n', ["max_age"]),
        ("[sessions]\ndefault_ttl = 9223372036854775000\n", ["default_ttl"]),
        ('[audit]\nmax_age = "999999999999w999999999999w"\n', ["max_age"]),
        ("services = 1\n", ["services"]),
        ('[services.openai]\nallow_range = "yes"\n', ["allow_range", "true or false"]),
        ('[ui]\nenabled = "yes"\n', ["[ui] enabled", "true or false"]),
        ('[ui]\nsession_ttl = "0s"\n', ["[ui] session_ttl"]),
        ('[ui]\nsession_ttl = "30d"\n[sessions]\nmax_ttl = "1d"\n', ["session_ttl", "max_ttl"]),
    ],
)
def test_bad_settings_are_one_config_error_naming_the_key(
    tmp_path: Path, env: dict[str, str], text: str, names: list[str]
) -> None:
    message = config_error(tmp_path, env, text)
    for name in names:
        assert name in message


def test_invalid_toml_is_a_config_error_naming_the_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    message = config_error(tmp_path, env, "[server\nport = 1\n")
    assert "not valid TOML" in message
    assert str(tmp_path / "etc" / "config.toml") in message


def test_endless_config_file_is_refused_not_read_whole(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_config(config_path="/dev/zero", env=env)


def test_non_utf8_file_is_a_config_error(tmp_path: Path, env: dict[str, str]) -> None:
    message = config_error(tmp_path, env, b'[server]\nhost = "\xff\xfe"\n')
    assert "UTF-8" in message


# -- services --------------------------------------------------------------------


def test_overriding_a_builtin_base_url_keeps_its_other_fields(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = load_text(
        tmp_path,
        env,
        '[services.openai]\nbase_url = "https://gateway.example.com/"\n'
        '[services.anthropic]\nbase_url = "http://127.0.0.1:8080"\n',
    )
    openai = config.services["openai"]
    assert openai.base_url == "https://gateway.example.com"
    assert openai == replace(BUILTINS["openai"], base_url="https://gateway.example.com")
    assert (openai.env_key, openai.env_base_suffix) == ("OPENAI_API_KEY", "/v1")
    anthropic = config.services["anthropic"]
    assert anthropic.base_url == "http://127.0.0.1:8080"
    assert (anthropic.auth, anthropic.header) == ("header", "x-api-key")
    assert dict(anthropic.headers) == {"anthropic-version": "2023-06-01"}
    assert anthropic.env_key == "ANTHROPIC_API_KEY"
    assert anthropic.builtin
    # The other built-ins are untouched.
    assert config.services["github"] == BUILTINS["github"]


def test_a_new_service_with_every_key(tmp_path: Path, env: dict[str, str]) -> None:
    config = load_text(
        tmp_path,
        env,
        """
        [services."custom.github"]
        base_url = "https://ghe.example.com/api/v3"
        auth = "header"
        header = "X-Api-Key"
        template = "token {secret}"
        query_param = "api_key"
        headers = { "x-version" = "2" }
        env_key = "GHE_TOKEN"
        env_base_url = "GHE_URL"
        env_base_suffix = "/v3/"
        """,
    )
    service = config.services["custom.github"]
    assert service.base_url == "https://ghe.example.com/api/v3"
    assert (service.auth, service.header, service.template) == (
        "header",
        "X-Api-Key",
        "token {secret}",
    )
    assert service.query_param == "api_key"
    assert dict(service.headers) == {"x-version": "2"}
    assert (service.env_key, service.env_base_url, service.env_base_suffix) == (
        "GHE_TOKEN",
        "GHE_URL",
        "/v3",
    )
    assert not service.builtin
    assert set(BUILTINS) < set(config.services)


def test_a_new_service_needs_base_url(tmp_path: Path, env: dict[str, str]) -> None:
    message = config_error(tmp_path, env, '[services.mine]\nauth = "bearer"\n')
    assert "[services.mine]" in message and "base_url" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.1",
        "http://localhost",
        "http://localhost:9/v1",
        "http://[::1]:9",
        "https://api.example.com",
        "https://api.example.com:8443/base/",
    ],
)
def test_accepted_base_urls(tmp_path: Path, env: dict[str, str], url: str) -> None:
    config = load_text(tmp_path, env, f'[services.mine]\nbase_url = "{url}"\n')
    assert config.services["mine"].base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com",
        "http://10.0.0.1:8080",
        "http://localhost.example.com",
        "http://[::2]:9",
        "ftp://api.example.com",
        "https://",
        "api.example.com",
        "",
        "https://user:pass@api.example.com",
        "https://user@api.example.com",
        "https://api.example.com/v1?key=1",
        "https://api.example.com/v1?",
        "https://api.example.com/#frag",
        "https://api example.com",
        "https://api.example.com/a b",
        "https://api.example.com\\t",
        "https://api.example.com:99999",
    ],
)
def test_refused_base_urls(tmp_path: Path, env: dict[str, str], url: str) -> None:
    message = config_error(tmp_path, env, f'[services.mine]\nbase_url = "{url}"\n')
    assert "[services.mine] base_url" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('auth = "digest"', "auth"),
        ("auth = 1", "auth"),
        ('header = "X-Key\\r\\nEvil: 1"', "header"),
        ('header = "X Key"', "header"),
        ('header = "X-Key:"', "header"),
        ('header = ""', "header"),
        ('template = "Bearer"', "template"),
        ('template = "{secret} {other}"', "template"),
        ('query_param = "a&b"', "query_param"),
        ('headers = "x"', "headers"),
        ('headers = { "x a" = "v" }', "headers"),
        ('headers = { "x-a" = "v\\r\\nEvil: 1" }', "headers"),
        ('headers = { "x-a" = "v\\u0000" }', "headers"),
        ("headers = { x-a = 1 }", "headers"),
        ('env_key = "1BAD"', "env_key"),
        ('env_base_url = "A-B"', "env_base_url"),
        ('env_base_suffix = "v1"', "env_base_suffix"),
        ("bogus = 1", "bogus"),
    ],
)
def test_bad_service_keys(tmp_path: Path, env: dict[str, str], line: str, key: str) -> None:
    message = config_error(tmp_path, env, f"[services.openai]\n{line}\n")
    assert "[services.openai]" in message and key in message


@pytest.mark.parametrize("name", ["Bad_Name", "-x", ".x", "", "a" * 64, "a b", "ünï"])
def test_bad_service_names(tmp_path: Path, env: dict[str, str], name: str) -> None:
    message = config_error(tmp_path, env, f'[services."{name}"]\nbase_url = "https://x.example"\n')
    assert f"[services.{name}]" in message


def test_service_that_is_not_a_table(tmp_path: Path, env: dict[str, str]) -> None:
    message = config_error(tmp_path, env, "[services]\nmine = 1\n")
    assert "[services.mine]" in message


# -- what a reload compares (issue 17, item 3) -------------------------------------


def test_sessions_keep_defaults_to_a_week(tmp_path: Path, env: dict[str, str]) -> None:
    assert load_text(tmp_path, env, "").sessions_keep == 7 * DAY
    assert load_text(tmp_path, env, '[sessions]\nkeep = "36h"\n').sessions_keep == 36 * 3600
    assert "keep" in config_error(tmp_path, env, '[sessions]\nkeep = "0s"\n')


def test_setting_items_name_keys_and_tables_as_the_file_does(
    tmp_path: Path, env: dict[str, str]
) -> None:
    items = setting_items(
        load_text(
            tmp_path,
            env,
            '[proxy]\nread_timeout = "2m"\n[services."my.api"]\nbase_url = "https://a.example"\n'
            '[prices."openai/gpt-x"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
            '[policies.agent]\ndeny = ["DELETE /**"]\n',
        )
    )
    assert items["[proxy] read_timeout"] == 120
    assert items["[audit] max_rows"] == 100_000
    assert items["[sessions] keep"] == 7 * DAY
    assert items['[services."my.api"]']["base_url"] == "https://a.example"  # type: ignore[index]
    assert items["[services.openai]"]["auth"] == "bearer"  # type: ignore[index]
    assert '[prices."openai/gpt-x"]' in items
    assert items["[policies.agent]"] == {"deny": ["DELETE /**"]}


def test_config_digest_follows_the_settings_not_the_paths(
    tmp_path: Path, env: dict[str, str]
) -> None:
    base = '[services.openai]\nbase_url = "https://gw.example"\n'
    digest = config_digest(load_text(tmp_path, env, base))
    # Comments, layout, and where the vault and key are: the same config to a daemon.
    same = load_text(
        tmp_path,
        {**env, "VAULTD_DATA_DIR": str(tmp_path / "elsewhere")},
        f'# a comment\n[crypto]\nkey_file = "{tmp_path}/k"\n\n{base}',
    )
    assert config_digest(same) == digest
    for changed in (
        '[services.openai]\nbase_url = "https://gw2.example"\n',
        base + '[prices."openai/gpt-x"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n',
        base + "[server]\nport = 4001\n",
        base + '[policies.p]\nmodels = ["gpt-*"]\n',
    ):
        assert config_digest(load_text(tmp_path, env, changed)) != digest, changed
