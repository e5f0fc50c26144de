"""The CLI verbs against a real database file, as a user runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.support.cli import CLI
from vaultd.cli.main import VERBS

SECRET = "sk-proj-0123456789abcdefghijklmnopqrstuv"
CONTRACT_FIELDS = {"id", "service", "name", "created_at", "last_used_at"}
DESIGN_FIELDS = CONTRACT_FIELDS | {
    "type",
    "hint",
    "metadata",
    "is_default",
    "updated_at",
    "use_count",
    "limits",
    "source",
    "remote",
    "expires_at",
}


def test_init_creates_private_dirs_key_and_database(cli_env: CLI) -> None:
    result = cli_env.ok("init")
    assert "created vault" in result.stderr
    assert cli_env.key_file.stat().st_mode & 0o777 == 0o600
    assert len(cli_env.key_file.read_bytes()) == 32
    assert cli_env.db_path.stat().st_mode & 0o777 == 0o600
    assert cli_env.db_path.parent.stat().st_mode & 0o777 == 0o700
    assert cli_env.key_file.parent.stat().st_mode & 0o777 == 0o700


def test_init_again_never_replaces_the_key(initialised: CLI) -> None:
    key = initialised.key_file.read_bytes()
    initialised.add("openai", "primary", SECRET)
    result = initialised.ok("init")
    assert "already exists" in result.stdout
    assert initialised.key_file.read_bytes() == key
    with initialised.vault() as vault:
        cred = vault.credentials.resolve("openai/primary")
        assert vault.credentials.reveal(vault.unlock(), cred) == SECRET


def test_readme_quick_start_shape(initialised: CLI) -> None:
    """`printf 'sk-...\\n' | vaultd add openai primary` then `vaultd list --json`."""
    initialised.ok("add", "openai", "primary", input=SECRET + "\n")
    items = initialised.listing()
    assert len(items) == 1
    item = items[0]
    assert set(item) == DESIGN_FIELDS
    assert isinstance(item["id"], str) and len(item["id"]) == 36
    assert item["id"][14] == "7"  # UUID version 7: time-ordered
    assert (item["service"], item["name"]) == ("openai", "primary")
    assert isinstance(item["created_at"], int)
    assert item["last_used_at"] is None
    assert item["hint"] == "sk-...stuv"
    assert item["is_default"] is True
    assert item["use_count"] == 0
    assert SECRET not in json.dumps(items)


def test_list_is_oldest_first_and_filters_by_service(initialised: CLI) -> None:
    names = [f"key{i}" for i in range(5)]
    for name in names:
        initialised.add("openai" if name != "key2" else "github", name, f"secret-{name}")
    assert [i["name"] for i in initialised.listing()] == names
    only = json.loads(initialised.ok("list", "--service", "github", "--json").stdout)
    assert [i["name"] for i in only] == ["key2"]


def test_list_table_is_readable_and_shows_no_secret(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET, "--meta", "team=ml")
    out = initialised.ok("list").stdout
    header, row = out.splitlines()
    assert header.split() == [
        "ID",
        "SERVICE",
        "NAME",
        "HINT",
        "DEFAULT",
        "LAST",
        "USED",
        "USES",
        "EXPIRES",
    ]
    assert "openai" in row and "primary" in row and "sk-...stuv" in row and "never" in row
    assert SECRET not in out


def test_empty_vault_list_says_how_to_add(initialised: CLI) -> None:
    result = initialised.ok("list")
    assert result.stdout == ""
    assert "vaultd add" in result.stderr


@pytest.mark.parametrize(
    ("verb", "hint"),
    [
        (["session", "list"], "vaultd session create"),
        (["audit"], "no proxied requests recorded"),
        (["audit", "--service", "openai"], "that match"),
    ],
)
def test_empty_listings_say_so_on_stderr(initialised: CLI, verb: list[str], hint: str) -> None:
    result = initialised.ok(*verb)
    assert result.stdout == ""
    assert hint in result.stderr
    assert json.loads(initialised.ok(*verb, "--json").stdout) == []


def test_tables_escape_control_characters_from_outside(initialised: CLI) -> None:
    """An audit row holds what a local client sent: no raw escape reaches the terminal."""
    with initialised.vault() as vault:
        vault.db.execute(
            "INSERT INTO audit (at, request_id, service, method, path, status, duration_ms,"
            " bytes_in, bytes_out) VALUES (strftime('%s'), 'r', ?, 'GET', ?, 404, 1, 0, 0)",
            ["\x1b]0;pwned\x07", "/x\x1b[2J\rfake"],
        )
        vault.db.conn.commit()
    out = initialised.ok("audit").stdout
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b]0;pwned\\x07" in out and "/x\\x1b[2J\\rfake" in out


def test_show_by_id_prefix_and_service_name(initialised: CLI) -> None:
    created = initialised.add("openai", "primary", SECRET)
    by_name = json.loads(initialised.ok("show", "openai/primary", "--json").stdout)
    by_id = json.loads(initialised.ok("show", created["id"], "--json").stdout)
    by_prefix = json.loads(initialised.ok("show", created["id"][:13], "--json").stdout)
    assert by_name == by_id == by_prefix == created
    text = initialised.ok("show", "openai/primary").stdout
    assert "sk-...stuv" in text and SECRET not in text


def test_add_reads_only_the_first_line_and_never_argv(initialised: CLI) -> None:
    initialised.ok("add", "openai", "primary", input=f"{SECRET}\nsecond-line\n")
    with initialised.vault() as vault:
        cred = vault.credentials.resolve("openai/primary")
        assert vault.credentials.reveal(vault.unlock(), cred) == SECRET
    # There is no option or argument that takes a secret.
    result = initialised.run("add", "openai", "x", SECRET, input="y\n")
    assert result.exit_code == 2


def test_add_options_type_meta_expiry(initialised: CLI) -> None:
    item = initialised.add(
        "github",
        "ci",
        "ghp_abc",
        "--type",
        "git_pat",
        "--meta",
        "team=ml",
        "--meta",
        "env=prod",
        "--expires",
        "90d",
    )
    assert item["type"] == "git_pat"
    assert item["metadata"] == {"team": "ml", "env": "prod"}
    assert item["hint"] is None  # short secrets get no hint
    assert item["expires_at"] - item["created_at"] in range(90 * 86400 - 2, 90 * 86400 + 2)


def test_rotate_replaces_the_secret_and_keeps_the_id(initialised: CLI) -> None:
    created = initialised.add("openai", "primary", SECRET)
    new = "sk-proj-ROTATEDROTATEDROTATEDROTATED9999"
    out = initialised.ok("rotate", "openai/primary", "--json", input=new + "\n").stdout
    rotated = json.loads(out)
    assert rotated["id"] == created["id"]
    assert rotated["hint"] == "sk-...9999"
    with initialised.vault() as vault:
        cred = vault.credentials.get(created["id"])
        assert vault.credentials.reveal(vault.unlock(), cred) == new


def test_rotate_with_empty_secret_keeps_the_old_one(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    initialised.fails("rotate", "openai/primary", input="\n")
    with initialised.vault() as vault:
        cred = vault.credentials.resolve("openai/primary")
        assert vault.credentials.reveal(vault.unlock(), cred) == SECRET


def test_rm_needs_yes_off_a_terminal_and_removes(initialised: CLI) -> None:
    initialised.add("openai", "primary", SECRET)
    err = initialised.fails("rm", "openai/primary")
    assert "--yes" in err
    assert len(initialised.listing()) == 1
    initialised.ok("rm", "openai/primary", "--yes")
    assert initialised.listing() == []


def test_default_moves_between_keys_of_a_service(initialised: CLI) -> None:
    first = initialised.add("openai", "one", "sk-one")
    second = initialised.add("openai", "two", "sk-two")
    assert first["is_default"] and not second["is_default"]
    initialised.ok("default", "openai/two")
    defaults = {i["name"]: i["is_default"] for i in initialised.listing()}
    assert defaults == {"one": False, "two": True}


def test_removing_the_default_says_none_is_left(initialised: CLI) -> None:
    initialised.add("openai", "one", "sk-one")
    initialised.add("openai", "two", "sk-two")
    result = initialised.ok("rm", "openai/one", "--yes")
    assert "no default credential" in result.stderr
    assert [i["is_default"] for i in initialised.listing()] == [False]


def test_services_lists_builtins_with_counts(initialised: CLI) -> None:
    initialised.add("openai", "one", "sk-one")
    items = json.loads(initialised.ok("services", "--json").stdout)
    by_name = {i["name"]: i for i in items}
    for name in (
        "openai",
        "anthropic",
        "github",
        "gemini",
        "mistral",
        "groq",
        "openrouter",
        "huggingface",
    ):
        assert name in by_name
    assert by_name["openai"]["credential_count"] == 1
    assert by_name["anthropic"]["auth"] == "header"


def test_session_create_prints_only_the_token(initialised: CLI) -> None:
    result = initialised.ok(
        "session", "create", "--name", "script", "--service", "openai", "--ttl", "1h"
    )
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.startswith("fn_sess_") and len(token) == 8 + 43
    assert token not in result.stderr
    listed = json.loads(initialised.ok("session", "list", "--json").stdout)
    assert len(listed) == 1
    assert listed[0]["key_prefix"] == token[:12]
    assert listed[0]["services"] == ["openai"]
    assert listed[0]["scopes"] == ["read", "proxy"]
    assert listed[0]["status"] == "active"
    assert token not in json.dumps(listed)
    assert listed[0]["expires_at"] - listed[0]["created_at"] == 3600
    with initialised.vault() as vault:
        assert vault.sessions.authenticate(token).id == listed[0]["id"]


def test_session_revoke_is_immediate(initialised: CLI) -> None:
    token = initialised.ok("session", "create").stdout.strip()
    session_id = json.loads(initialised.ok("session", "list", "--json").stdout)[0]["id"]
    initialised.ok("session", "revoke", session_id)
    with initialised.vault() as vault:
        from vaultd.errors import Unauthorized

        with pytest.raises(Unauthorized, match="revoked"):
            vault.sessions.authenticate(token)


def test_session_ttl_beyond_max_refused(initialised: CLI) -> None:
    err = initialised.fails("session", "create", "--ttl", "400d")
    assert "max_ttl" in err
    err = initialised.fails("session", "create", "--service", "nosuch")
    assert "nosuch" in err
    for ttl in ("0s", "999999999999w" * 16):
        result = initialised.run("session", "create", "--ttl", ttl)
        assert result.exit_code == 2 and "--ttl" in result.stderr, result.output
        assert result.stdout == ""
    result = initialised.run("audit", "--since", "999999999999w" * 16)
    assert result.exit_code == 2 and "--since" in result.stderr, result.output


def test_every_verb_has_help(cli_env: CLI) -> None:
    out = cli_env.ok("--help").stdout
    for verb in (
        "init",
        "add",
        "list",
        "show",
        "rotate",
        "rm",
        "default",
        "session",
        "services",
        "serve",
    ):
        assert verb in out


# Every verb but serve, each run once as a user would, in one process; the
# probe names the first verb after which aiohttp is loaded.
_NON_HTTP_VERBS = (
    ("init",),
    ("add", "openai", "second"),
    ("list",),
    ("show", "openai/primary"),
    ("rotate", "openai/second"),
    ("default", "openai/second"),
    ("limit", "openai/primary", "--max-requests-per-day", "100"),
    ("rm", "openai/second", "--yes"),
    ("services",),
    ("session", "create", "--ttl", "1h"),
    ("session", "list"),
    ("session", "revoke", "0"),
    ("audit",),
    ("usage",),
    ("usage", "--by", "credential", "--since", "7d", "--json"),
    ("backup", "BACKUP"),
    ("rekey",),
    ("passwd",),
    ("doctor",),
    ("systemd-unit",),
    ("import", "/nonexistent/.env"),
    # run speaks HTTP with urllib, to check the daemon; none runs here.
    ("run", "--service", "openai", "--", "true"),
    # env likewise (the daemon is not there: it stops before minting).
    ("env", "--service", "openai"),
    ("completion", "bash"),
    # ui likewise: the daemon is not there, so it stops before minting.
    ("ui", "--print-url"),
)


def test_verbs_without_http_never_import_aiohttp(initialised: CLI, tmp_path: Path) -> None:
    from vaultd.cli.main import cli

    covered = {args[0] for args in _NON_HTTP_VERBS}
    names = set(cli.list_commands(click.Context(cli)))
    assert covered == names - {"serve"}, "a new verb joins _NON_HTTP_VERBS"
    initialised.add("openai", "primary", SECRET)
    verbs = [
        [str(tmp_path / "backup.db") if a == "BACKUP" else a for a in args]
        for args in _NON_HTTP_VERBS
    ]
    code = (
        "import io, sys\n"
        "from vaultd.cli.main import cli\n"
        f"for args in {verbs!r}:\n"
        "    sys.stdin = io.TextIOWrapper(io.BytesIO(b'sk-proj-AnotherRealKey0001\\n'))\n"
        "    try:\n"
        "        cli(args, standalone_mode=False)\n"
        "    except BaseException:\n"
        "        pass  # a verb that refuses here (passwd without a passphrase) still counts\n"
        "    if 'aiohttp' in sys.modules:\n"
        "        print('AIOHTTP after', args, file=sys.stderr)\n"
        "        break\n"
        "else:\n"
        "    print('CLEAN', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "VAULTD_URL": "http://127.0.0.1:9"},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("CLEAN"), done.stderr


# -- bad input: one clear line, exit 1, nothing stored changes -------------------


@pytest.fixture
def stocked(initialised: CLI) -> CLI:
    initialised.add("openai", "primary", SECRET, "--meta", "team=ml")
    initialised.add("github", "work", "ghp_0123456789abcdefghijklmn")
    return initialised


def assert_unchanged(env: CLI, before: list[dict[str, object]]) -> None:
    assert env.listing() == before
    with env.vault() as vault:
        cred = vault.credentials.resolve("openai/primary")
        assert vault.credentials.reveal(vault.unlock(), cred) == SECRET


@pytest.mark.parametrize(
    ("args", "stdin", "expect"),
    [
        (("add", "openai", "empty"), "\n", "no secret"),
        (("add", "openai", "empty"), "", "no secret"),
        (("add", "openai", "blank"), "   \n", "no secret"),
        (("add", "openai", "primary"), "sk-other\n", "already exists"),
        (("add", "Open_AI", "x"), "s\n", "service"),
        (("add", "nosuchservice", "x"), "s\n", "unknown service"),
        (("add", "openai", "bad\x07name"), "s\n", "control"),
        (("add", "openai", "n" * 256), "s\n", "255"),
        (
            ("add", "openai", "ok", *[a for i in range(51) for a in ("--meta", f"k{i}=v")]),
            "s\n",
            "50",
        ),
        (("add", "openai", "ok", "--meta", "k" * 41 + "=v"), "s\n", "40"),
        (("add", "openai", "ok", "--type", "Not A Type"), "s\n", "type"),
        (("add", "openai", "ok"), "sk\x00abc\n", "control"),
        (("add", "openai", "ok"), b"\xff\xfe\n", "UTF-8"),
        (("show", "openai/nothere"), None, "no credential"),
        (("show", "ffffffff"), None, "no credential"),
        (("show", "not-an-id!"), None, "no credential"),
        (("rm", "nosuch/x", "--yes"), None, "no credential"),
        (("rotate", "openai/nothere"), "sk-new\n", "no credential"),
        (("default", "zzz"), None, "no credential"),
        (("session", "revoke", "nosuch"), None, "no session"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    stocked: CLI, args: tuple[str, ...], stdin: str | bytes | None, expect: str
) -> None:
    before = stocked.listing()
    err = stocked.fails(*args, input=stdin)
    assert expect in err
    assert_unchanged(stocked, before)


def test_bad_option_values_are_usage_errors(stocked: CLI) -> None:
    before = stocked.listing()
    stocked.fails("add", "openai", "x", "--expires", "soon", input="s\n", code=2)
    stocked.fails("add", "openai", "x", "--meta", "novalue", input="s\n", code=2)
    stocked.fails("session", "create", "--ttl", "forever", code=2)
    assert_unchanged(stocked, before)


def test_ambiguous_id_prefix(stocked: CLI) -> None:
    ids = [i["id"] for i in stocked.listing()]
    common = os.path.commonprefix(ids)  # noqa: RUF071 (strings, not paths)
    assert common, "two UUIDv7 made within a second share their leading time bits"
    err = stocked.fails("show", common)
    assert "more than one" in err


def test_key_file_open_to_others_is_refused(stocked: CLI) -> None:
    before = stocked.listing()
    stocked.key_file.chmod(0o644)
    for verb in (("list",), ("add", "openai", "x"), ("show", "openai/primary")):
        err = stocked.fails(*verb, input="sk-x\n")
        assert "key file" in err and "chmod 600" in err
    stocked.key_file.chmod(0o600)
    assert_unchanged(stocked, before)


def test_init_with_an_open_key_directory_leaves_nothing_behind(cli_env: CLI) -> None:
    cli_env.key_file.parent.mkdir(parents=True, mode=0o755)
    cli_env.key_file.parent.chmod(0o755)
    err = cli_env.fails("init")
    assert "key directory" in err and "chmod 700" in err
    assert not cli_env.db_path.exists() and not cli_env.key_file.exists()
    cli_env.key_file.parent.chmod(0o700)
    cli_env.ok("init")
    assert cli_env.key_file.exists() and cli_env.db_path.exists()


def test_data_dir_open_to_others_is_refused(stocked: CLI) -> None:
    before = stocked.listing()
    stocked.db_path.parent.chmod(0o755)
    err = stocked.fails("list")
    assert "data directory" in err and "chmod 700" in err
    stocked.db_path.parent.chmod(0o700)
    assert_unchanged(stocked, before)


@pytest.mark.parametrize(
    "content",
    [b"", b"short", b"x" * 33, bytes(range(64))],
    ids=["empty", "short", "33-bytes", "64-bytes"],
)
def test_corrupt_key_file_is_refused(stocked: CLI, content: bytes) -> None:
    before = stocked.listing()
    good = stocked.key_file.read_bytes()
    stocked.key_file.write_bytes(content)
    err = stocked.fails("add", "openai", "x", input="sk-x\n")
    assert "key file" in err and "damaged" in err
    stocked.key_file.write_bytes(good)
    assert_unchanged(stocked, before)


def test_wrong_key_is_refused(stocked: CLI) -> None:
    before = stocked.listing()
    good = stocked.key_file.read_bytes()
    stocked.key_file.write_bytes(os.urandom(32))
    err = stocked.fails("add", "openai", "x", input="sk-x\n")
    assert "wrong key" in err
    err = stocked.fails("init")
    assert "wrong key" in err
    stocked.key_file.write_bytes(good)
    assert_unchanged(stocked, before)


def test_missing_key_file_is_refused_and_not_recreated(stocked: CLI) -> None:
    good = stocked.key_file.read_bytes()
    stocked.key_file.unlink()
    err = stocked.fails("add", "openai", "x", input="sk-x\n")
    assert "missing" in err
    # init must not mint a new key that could never open the existing vault
    stocked.fails("init")
    assert not stocked.key_file.exists()
    stocked.key_file.write_bytes(good)
    stocked.key_file.chmod(0o600)


@pytest.mark.parametrize("garbage", [b"this is not a database" * 100, os.urandom(8192), b""])
def test_corrupt_database_is_refused_untouched(cli_env: CLI, garbage: bytes) -> None:
    cli_env.ok("init")
    cli_env.db_path.write_bytes(garbage)
    if garbage:
        err = cli_env.fails("list")
        assert "corrupt" in err or "not a vaultd database" in err
        err = cli_env.fails("add", "openai", "x", input="sk-x\n")
        assert cli_env.db_path.read_bytes() == garbage
    else:
        # An empty file is what SQLite itself makes; it holds no vault yet.
        err = cli_env.fails("list")
        assert "not initialised" in err


def test_foreign_sqlite_database_is_refused(cli_env: CLI) -> None:
    cli_env.ok("init")
    cli_env.db_path.unlink()
    with sqlite3.connect(cli_env.db_path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    cli_env.db_path.chmod(0o600)
    err = cli_env.fails("list")
    assert "not a vaultd database" in err


def test_no_vault_yet_says_run_init(cli_env: CLI) -> None:
    err = cli_env.fails("list")
    assert "vaultd init" in err


def test_explicit_data_dir_and_config(cli_env: CLI, tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    conf = tmp_path / "conf.toml"
    conf.write_text(f'[crypto]\nkey_file = "{tmp_path}/k/master.key"\n')
    cli_env.ok("--config", str(conf), "--data-dir", str(data), "init")
    assert (data / "vault.db").exists()
    assert (tmp_path / "k" / "master.key").exists()
    cli_env.ok("--config", str(conf), "--data-dir", str(data), "add", "openai", "p", input="sk-1\n")
    assert cli_env.fails("list")  # the default location has no vault
    err = cli_env.fails("--config", str(tmp_path / "missing.toml"), "list")
    assert "does not exist" in err


def test_bad_config_is_one_line_naming_the_key(cli_env: CLI, tmp_path: Path) -> None:
    conf = tmp_path / "conf.toml"
    conf.write_text("[server]\nport = 'abc'\n")
    err = cli_env.fails("--config", str(conf), "init")
    assert "[server] port" in err


def test_the_cli_loads_only_the_verb_it_runs() -> None:
    """Verbs are imported when they run: `vaultd list` loads no .env parser, no
    browser helpers and no isolation plan, and `vaultd serve` none of them either."""
    code = (
        "import sys\n"
        "from vaultd.cli.main import cli, VERBS\n"
        "import click\n"
        "verbs = {'vaultd.cli.' + module for module, _ in VERBS.values()}\n"
        "print(sorted(m for m in verbs if m in sys.modules))\n"
        "cli.get_command(click.Context(cli), 'list')\n"
        "print(sorted(m for m in (*verbs, 'dotenv', 'urllib.request') if m in sys.modules))\n"
        "for name in cli.list_commands(click.Context(cli)):\n"
        "    assert cli.get_command(click.Context(cli), name).name == name, name\n"
        "print(len(cli.list_commands(click.Context(cli))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    before, after_list, count = done.stdout.splitlines()
    assert before == "[]"
    assert after_list == "['vaultd.cli.credentials']"
    assert int(count) == len(VERBS) >= 23


def test_a_mistyped_verb_is_answered_with_the_nearest_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vaultd", "lst"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "No such command 'lst'. Did you mean 'list'?" in done.stderr
