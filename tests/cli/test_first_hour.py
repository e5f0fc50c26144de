"""What a new user tripped over in the first hour (issue 17), done as they did it.

Each test runs the real CLI against a real vault file and asserts the line the
user reads, and that nothing was stored, changed or shown that must not be.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
from pathlib import Path

import nacl.pwhash
import pytest

from tests.support.cli import CLI, file_bytes_under
from tests.support.daemon import DaemonEnv, vaultd_argv
from vaultd import crypto
from vaultd.config import load_config
from vaultd.core.vault import open_vault
from vaultd.errors import ValidationError
from vaultd.models import secret_mistake

# What the user meant to paste: it must never show up in what vaultd prints.
REAL = "sk-proj-REALkey0123456789abcdefghijklmn"
HIDDEN_PART = "REALkey0123456789"
OLD = "sk-proj-OLDkey9876543210zyxwvutsrqponm"

ADD_HOW = (
    "pass only the key: paste it at the hidden prompt of vaultd add openai primary, "
    "or: printenv OPENAI_API_KEY | vaultd add openai primary"
)
ROTATE_HOW = (
    "pass only the key: paste it at the hidden prompt of vaultd rotate openai/primary, "
    "or: printenv OPENAI_API_KEY | vaultd rotate openai/primary"
)
NAME_VALUE = "looks like a NAME=value line (from a .env file or an export), not the key alone"
QUOTED = "is wrapped in quotes, which would be sent as part of the key"
DOTS = "looks like a placeholder (it contains ...), not a key"
ANGLES = "looks like a placeholder (it is wrapped in < >), not a key"
YOUR = "looks like a placeholder (YOUR_..._KEY), not a key"
FILLER = "looks like a placeholder (only x's or *'s after its prefix), not a key"

PASTES = [
    ("sk-proj-...", DOTS),  # the README's own placeholder, as it was
    ("sk-...lmn0", DOTS),  # a hint copied from `vaultd list`
    ("sk-proj-REALkey0123456789\u2026", DOTS),
    (f"export OPENAI_API_KEY={REAL}", NAME_VALUE),
    (f'export OPENAI_API_KEY="{REAL}"', NAME_VALUE),
    (f'OPENAI_API_KEY="{REAL}"', NAME_VALUE),
    (f"OPENAI_API_KEY={REAL}", NAME_VALUE),
    (f'"{REAL}"', QUOTED),
    (f"'{REAL}'", QUOTED),
    ("<your-api-key>", ANGLES),
    ("<OPENAI_API_KEY>", ANGLES),
    ("YOUR_API_KEY", YOUR),
    ("YOUR_KEY", YOUR),
    ("sk-YOUR_OPENAI_KEY_HERE", YOUR),
    ("your-token", YOUR),
    ("sk-proj-xxxxxxxxxxxxxxxx", FILLER),
    ("xxxxxxxx", FILLER),
    ("sk-****", FILLER),
]


def stored_secrets(env: CLI) -> dict[str, str]:
    with env.vault() as vault:
        dek = vault.unlock()
        return {
            f"{c.service}/{c.name}": vault.credentials.reveal(dek, c)
            for c in vault.credentials.list()
        }


# -- 1. secrets stored exactly as pasted ---------------------------------------------


@pytest.mark.parametrize(("pasted", "seen"), PASTES)
def test_add_refuses_a_line_that_is_not_the_key_alone(
    initialised: CLI, pasted: str, seen: str
) -> None:
    """`printf 'export OPENAI_API_KEY=sk-...\\n' | vaultd add openai primary`."""
    result = initialised.run("add", "openai", "primary", input=pasted + "\n")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: the secret {seen}; {ADD_HOW}\n"
    assert HIDDEN_PART not in result.output
    assert initialised.listing() == []


@pytest.mark.parametrize(("pasted", "seen"), PASTES[:4])
def test_rotate_refuses_it_too_and_keeps_the_old_secret(
    initialised: CLI, pasted: str, seen: str
) -> None:
    initialised.add("openai", "primary", OLD)
    before = initialised.listing()
    err = initialised.fails("rotate", "openai/primary", input=pasted + "\n")
    assert err == f"Error: the secret {seen}; {ROTATE_HOW}"
    assert HIDDEN_PART not in err
    assert initialised.listing() == before
    assert stored_secrets(initialised) == {"openai/primary": OLD}


def test_the_refusal_names_the_services_variable(initialised: CLI) -> None:
    err = initialised.fails("add", "anthropic", "team dev", input="sk-ant-...\n")
    assert err == (
        f"Error: the secret {DOTS}; pass only the key: paste it at the hidden prompt of "
        "vaultd add anthropic 'team dev', or: printenv ANTHROPIC_API_KEY | "
        "vaultd add anthropic 'team dev'"
    )


@pytest.mark.parametrize(
    "key",
    [
        REAL,
        "sk-ant-api03-AbCdEf_GhIjKl-MnOpQrStUvWxYz0123456789-abcDEF",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_11ABCDEFG0abcdefghijkl_MNOPQRSTUVWXyz0123456789",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",  # base64, padded: "=" but no NAME=value
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWQ==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    ],
)
def test_real_keys_are_stored_as_given(initialised: CLI, key: str) -> None:
    initialised.ok("add", "openai", "primary", input=key + "\n")
    assert stored_secrets(initialised) == {"openai/primary": key}


def test_random_keys_are_never_mistaken_for_placeholders() -> None:
    rng = random.Random(17)
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(20_000):
        prefix = rng.choice(["sk-", "sk-proj-", "ghp_", "hf_", ""])
        key = prefix + "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 64)))
        assert secret_mistake(key) is None, key


def test_a_password_of_that_shape_is_stored_under_a_chosen_type(initialised: CLI) -> None:
    """Keys a service issued never look like this; passwords people chose may."""
    for name, kind, value in (
        ("pw", "generic_secret", '"quoted...on purpose"'),
        ("basic", "basic_auth", "user:<pass>"),
    ):
        initialised.ok("add", "openai", name, "--type", kind, input=value + "\n")
    assert stored_secrets(initialised) == {
        "openai/pw": '"quoted...on purpose"',
        "openai/basic": "user:<pass>",
    }


def test_the_api_refuses_the_same_shapes(initialised: CLI) -> None:
    """POST and PATCH /api/credentials share the check (422, pointer /secret)."""
    with initialised.vault() as vault:
        dek = vault.unlock()
        with pytest.raises(ValidationError) as bad:
            vault.credentials.add(dek, service="openai", name="a", secret="sk-proj-...")
        assert [(e.pointer, e.message) for e in bad.value.errors] == [
            ("/secret", f"{DOTS}; send the key itself")
        ]
        created = vault.credentials.add(dek, service="openai", name="a", secret=OLD)
        with pytest.raises(ValidationError) as bad:
            vault.credentials.update(created.id, dek=dek, secret=f"OPENAI_API_KEY={REAL}")
        assert str(bad.value) == f"secret: {NAME_VALUE}; send the key itself"
        assert HIDDEN_PART not in str(bad.value)
        assert vault.credentials.reveal(dek, vault.credentials.get(created.id)) == OLD


# -- 2. adding a name that exists -----------------------------------------------------


def test_adding_a_name_that_exists_says_how_to_replace_it(initialised: CLI) -> None:
    initialised.add("openai", "primary", OLD)
    before = initialised.listing()
    err = initialised.fails("add", "openai", "primary", input=REAL + "\n")
    assert err == (
        "Error: a credential named openai/primary already exists; "
        "use vaultd rotate openai/primary to replace its secret"
    )
    assert initialised.listing() == before
    assert stored_secrets(initialised) == {"openai/primary": OLD}


# -- 8. unknown services: one message everywhere --------------------------------------

TYPO = "Error: unknown service 'opneai'; did you mean 'openai'? (vaultd services lists them)"


def test_session_create_with_a_typo(initialised: CLI) -> None:
    result = initialised.run("session", "create", "--service", "opneai")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == TYPO
    second = initialised.fails("session", "create", "--service", "openai", "--service", "opneai")
    assert second == TYPO
    assert json.loads(initialised.ok("session", "list", "--json").stdout) == []


def test_run_mints_through_the_same_check(initialised: CLI) -> None:
    """`vaultd run --service opneai` creates its session with this very call."""
    config = load_config()
    with initialised.vault() as vault:
        with pytest.raises(ValidationError) as bad:
            vault.sessions.create(
                name="run: python",
                scopes=["proxy"],
                services=["opneai"],
                ttl=3600,
                known_services=config.services,
            )
        assert vault.sessions.list() == []
    assert f"Error: {bad.value}" == TYPO
    assert [e.pointer for e in bad.value.errors] == ["/services/0"]


def test_list_with_a_typo_is_an_error_not_an_empty_list(initialised: CLI) -> None:
    initialised.add("openai", "primary", OLD)
    result = initialised.run("list", "--service", "opneai")
    assert (result.exit_code, result.stdout, result.stderr.strip()) == (1, "", TYPO)
    assert initialised.fails("list", "--service", "opneai", "--json") == TYPO
    # A known service with no keys yet is still just empty.
    assert initialised.ok("list", "--service", "anthropic").stdout == ""


def test_audit_with_a_typo_is_an_error(initialised: CLI) -> None:
    assert initialised.fails("audit", "--service", "opneai") == TYPO


def test_add_with_the_wrong_case_or_a_typo(initialised: CLI) -> None:
    for service in ("OpenAI", "opneai"):
        err = initialised.fails("add", service, "x", input=REAL + "\n")
        assert err == (
            f"Error: unknown service {service!r}; did you mean 'openai'? "
            "(vaultd services lists them)"
        )
    err = initialised.fails("add", "nosuchservice", "x", input=REAL + "\n")
    assert err == "Error: unknown service 'nosuchservice' (vaultd services lists them)"
    assert initialised.listing() == []


def test_a_key_pasted_as_the_service_is_not_echoed(initialised: CLI) -> None:
    """Only a service name, or a near miss of one, is repeated back."""
    err = initialised.fails("add", REAL, "x", input=REAL + "\n")
    assert err == "Error: service: must be 1 to 63 of a-z 0-9 . _ - starting with a letter or digit"
    assert initialised.listing() == []


def test_a_service_gone_from_the_config_still_lists_its_keys(initialised: CLI) -> None:
    config = initialised.home / ".config" / "vaultd" / "config.toml"
    config.write_text('[services.internal]\nbase_url = "https://llm.example.com"\n')
    initialised.add("internal", "k", OLD)
    config.unlink()
    listed = json.loads(initialised.ok("list", "--service", "internal", "--json").stdout)
    assert [i["name"] for i in listed] == ["k"]


# -- 9. backup into a directory that is not there --------------------------------------


def test_backup_into_a_missing_directory_names_it_and_makes_nothing(
    initialised: CLI, tmp_path: Path
) -> None:
    missing = tmp_path / "backups"
    err = initialised.fails("backup", str(missing / "x.db"))
    assert err == (
        f"Error: the directory {missing} does not exist; create it first "
        f"(mkdir -p {missing}) or back up elsewhere"
    )
    assert not missing.exists()
    a_file = tmp_path / "notes"
    a_file.write_text("not a directory")
    assert initialised.fails("backup", str(a_file / "x.db")) == (
        f"Error: {a_file} is not a directory; back up into one"
    )


# -- 11. the small ones -------------------------------------------------------------


@pytest.mark.parametrize("verb", [("doctor",), ("list", "--json"), ("services",)])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, verb: tuple[str, ...]) -> None:
    """`vaultd doctor | head -1`: `head` has gone when vaultd writes."""
    env = DaemonEnv(tmp_path)
    assert env.vaultd("init").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # what `head` does after its first line
    try:
        done = subprocess.run(
            vaultd_argv(*verb),
            env=env.vars,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == b""
    assert done.returncode == 141  # as a process that SIGPIPE ended: `yes | head -1`


def test_expires_90d_reads_90_days(initialised: CLI) -> None:
    shown = initialised.ok("add", "openai", "primary", "--expires", "90d", input=REAL + "\n")
    assert "expires    in 90 days\n" in shown.stdout
    row = initialised.ok("list").stdout.splitlines()[1]
    assert row.endswith("in 90 days")


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "PASSPHRASE_OPSLIMIT", nacl.pwhash.argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(crypto, "PASSPHRASE_MEMLIMIT", nacl.pwhash.argon2id.MEMLIMIT_MIN)


def test_init_passphrase_without_a_terminal_says_so_and_makes_nothing(cli_env: CLI) -> None:
    err = cli_env.fails("init", "--passphrase")
    assert err == (
        "Error: no terminal to ask for the new vault's passphrase on: give "
        "--passphrase-file FILE (a 0600 file, the passphrase its first line), "
        "or run vaultd init --passphrase on a terminal"
    )
    assert not cli_env.db_path.parent.exists()
    assert not cli_env.key_file.exists()


def test_passwd_without_a_terminal_names_its_option(
    cli_env: CLI, tmp_path: Path, fast_argon2: None
) -> None:
    pf = tmp_path / "pass"
    pf.write_text("correct horse battery staple 7\n")
    pf.chmod(0o600)
    cli_env.ok("--passphrase-file", str(pf), "init", "--passphrase")
    before = cli_env.db_path.read_bytes()
    err = cli_env.fails("--passphrase-file", str(pf), "passwd")
    assert err == (
        "Error: no terminal to ask for the new passphrase on: give "
        "--new-passphrase-file FILE (a 0600 file, the passphrase its first line)"
    )
    assert cli_env.db_path.read_bytes() == before


# -- 12. the key directory, for every command that reads the key -----------------------


@pytest.mark.parametrize(
    "verb",
    [
        ("list",),
        ("show", "openai/primary"),
        ("add", "openai", "second"),
        ("rotate", "openai/primary"),
        ("session", "create"),
        ("backup", "BACKUP"),
        ("init",),
    ],
)
def test_an_open_key_directory_is_refused_by_every_verb(
    initialised: CLI, tmp_path: Path, verb: tuple[str, ...]
) -> None:
    initialised.add("openai", "primary", OLD)
    key_dir = initialised.key_file.parent
    key_dir.chmod(0o750)
    footprint = file_bytes_under(initialised.home)
    args = [str(tmp_path / "b.db") if a == "BACKUP" else a for a in verb]
    try:
        err = initialised.fails(*args, input=REAL + "\n")
        assert err == (
            f"Error: key directory {key_dir} is open to group/other (mode 750); "
            f"fix it with: chmod 700 {key_dir}"
        )
        assert file_bytes_under(initialised.home) == footprint
        assert not (tmp_path / "b.db").exists()
    finally:
        key_dir.chmod(0o700)
    with open_vault(load_config()) as vault:
        assert [c.name for c in vault.credentials.list()] == ["primary"]
