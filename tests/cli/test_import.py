"""`vaultd import .env`: a real .env file, the real CLI, a real vault file (issue 16).

Each test checks what was stored (and that it opens to the key the file held),
what the file holds afterwards, byte for byte, and that no piece of any key
was printed or left behind.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from tests.support.cli import CLI
from vaultd.services import BUILTINS, unknown_service
from vaultd.store import db as store_db

OPENAI = "sk-proj-Q7xT2mV9pL4kR8wZ3nB6cF1hJ5dG0sYaEe"
ANTHROPIC = "sk-ant-api03-w8Rk2Pz5Lq9Vn3Tj6Hc1Xb4Mf7Gd0Sy-uQ"
GITHUB_OLD = "ghp_a9Zk3Lm7Qw2Er5Ty8Ui1Op4As6Df0Gh3Jk"
GITHUB = "ghp_N4bV7cX2zM9lK5jH8gF1dS6aP3oI0uY7tR"
HF = "hf_Wq5Er8Ty1Ui4Op7As0Df3Gh6Jk9Lz2Xc5Vb"
SECRETS = (OPENAI, ANTHROPIC, GITHUB_OLD, GITHUB, HF)
CERT = [
    'TLS_CERT="-----BEGIN CERTIFICATE-----',
    "MIIBszCCAVmgAwIBAgIUe",
    '-----END CERTIFICATE-----"',
]

BOM = b"\xef\xbb\xbf"
# The file as a user has it: a BOM, CRLF line ends, comments, blank lines,
# `export `, both quotes, an inline comment, a multi-line value, unrelated
# variables, a variable set twice, and one key under a name of the user's own.
KEEP = "keep"
LINES: list[tuple[str, str]] = [
    (KEEP, "# settings for the dev box"),
    (KEEP, ""),
    ("OPENAI_API_KEY", f'export OPENAI_API_KEY="{OPENAI}"'),
    ("ANTHROPIC_API_KEY", f"ANTHROPIC_API_KEY='{ANTHROPIC}'   # the team's key"),
    (KEEP, "DATABASE_URL=postgres://localhost/dev"),
    (KEEP, ""),
    (KEEP, "# the old token, kept just in case"),
    ("GITHUB_TOKEN", f"GITHUB_TOKEN={GITHUB_OLD}"),
    *((KEEP, line) for line in CERT),
    ("GITHUB_TOKEN", f"GITHUB_TOKEN={GITHUB}"),
    ("MY_HF", f"MY_HF={HF}"),
    (KEEP, "  DEBUG = true"),
]


def dotenv_bytes(lines: list[tuple[str, str]] = LINES) -> bytes:
    return BOM + "".join(text + "\r\n" for _, text in lines).encode()


def where(var: str, service: str, name: str = "imported") -> str:
    return f"# {var} moved to vaultd ({service}/{name}); use: vaultd run -- CMD"


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "project" / ".env"
    path.parent.mkdir()
    path.write_bytes(dotenv_bytes())
    path.chmod(0o640)
    return path


def stored_secrets(env: CLI) -> dict[str, str]:
    with env.vault() as vault:
        dek = vault.unlock()
        return {
            f"{c.service}/{c.name}": vault.credentials.reveal(dek, c)
            for c in vault.credentials.list()
        }


def assert_no_piece_of_any_secret(blob: str | bytes) -> None:
    """Not one run of 8 characters of any key (a prefix like ``sk-proj-`` aside)."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for secret in SECRETS:
        for i in range(8, len(secret) - 7):  # from past the well-known prefix
            assert secret[i : i + 8] not in text, f"a piece of {secret[:4]}... leaked"


def table(output: str) -> dict[str, list[str]]:
    rows = [line.split(None, 3) for line in output.splitlines()]
    assert rows[0] == ["VARIABLE", "SERVICE", "NAME", "RESULT"]
    return {row[0]: row[1:] for row in rows[1:]}


# -- what goes where ------------------------------------------------------------------


def test_import_stores_each_key_under_its_service(initialised: CLI, env_file: Path) -> None:
    before = env_file.read_bytes()
    result = initialised.ok("import", str(env_file), "--map", "MY_HF=huggingface")
    assert stored_secrets(initialised) == {
        "openai/imported": OPENAI,
        "anthropic/imported": ANTHROPIC,
        "github/imported": GITHUB,  # the last one wins, as python-dotenv has it
        "huggingface/imported": HF,
    }
    listed = {(c["service"], c["name"], c["is_default"]) for c in initialised.listing()}
    assert listed == {
        ("openai", "imported", True),
        ("anthropic", "imported", True),
        ("github", "imported", True),
        ("huggingface", "imported", True),
    }
    rows = table(result.stdout)
    assert list(rows) == [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DATABASE_URL",
        "GITHUB_TOKEN",
        "TLS_CERT",
        "MY_HF",
        "DEBUG",
    ]  # each variable once, the one set twice too
    assert rows["OPENAI_API_KEY"] == ["openai", "imported", "stored"]
    assert rows["GITHUB_TOKEN"] == [
        "github",
        "imported",
        "stored (set on lines 8, 12: the last one wins)",
    ]
    assert rows["MY_HF"] == ["huggingface", "imported", "stored"]
    assert rows["DATABASE_URL"] == [
        "-",
        "-",
        "skipped: not a known service's key (--map DATABASE_URL=SERVICE)",
    ]
    assert rows["TLS_CERT"][2].startswith("skipped")
    assert "stored 4 keys from" in result.stderr
    assert "--rewrite" in result.stderr  # the keys are still in the file: it says so
    assert env_file.read_bytes() == before
    assert_no_piece_of_any_secret(result.stdout + result.stderr)


def test_rewrite_replaces_the_moved_lines_and_keeps_every_other_byte(
    initialised: CLI, env_file: Path
) -> None:
    result = initialised.ok("import", str(env_file), "--rewrite", "--map", "MY_HF=huggingface")
    service = {"MY_HF": "huggingface"} | {s.env_key: s.name for s in BUILTINS.values() if s.env_key}
    expected = dotenv_bytes(
        [(var, text if var == KEEP else where(var, service[var])) for var, text in LINES]
    )
    after = env_file.read_bytes()
    assert after == expected
    assert after.startswith(BOM) and after.count(b"\r\n") == len(LINES)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert os.listdir(env_file.parent) == [".env"]  # no temporary file left
    assert_no_piece_of_any_secret(after)
    assert_no_piece_of_any_secret(result.stdout + result.stderr)
    assert f"rewrote {env_file}" in result.stderr
    assert len(stored_secrets(initialised)) == 4


def test_rewrite_through_a_symlink_replaces_the_file_it_points_to(
    initialised: CLI, env_file: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link.env"
    link.symlink_to(env_file)
    initialised.ok("import", str(link), "--rewrite")
    assert link.is_symlink()
    assert where("OPENAI_API_KEY", "openai").encode() in env_file.read_bytes()


def test_dry_run_stores_and_rewrites_nothing(initialised: CLI, env_file: Path) -> None:
    before = env_file.read_bytes()
    result = initialised.ok("import", str(env_file), "--dry-run", "--rewrite")
    assert table(result.stdout)["OPENAI_API_KEY"] == ["openai", "imported", "would be stored"]
    assert "dry run: nothing was stored or rewritten" in result.stderr
    assert initialised.listing() == []
    assert env_file.read_bytes() == before
    assert_no_piece_of_any_secret(result.stdout + result.stderr)


def test_a_taken_name_gives_the_variable_name(initialised: CLI, tmp_path: Path) -> None:
    initialised.add("openai", "imported", "sk-proj-AlreadyThereKey00000000000000")
    path = tmp_path / ".env"
    path.write_text(f"OPENAI_API_KEY={OPENAI}\n")
    result = initialised.ok("import", str(path), "--rewrite")
    assert table(result.stdout)["OPENAI_API_KEY"] == ["openai", "openai_api_key", "stored"]
    assert stored_secrets(initialised)["openai/openai_api_key"] == OPENAI
    assert path.read_text() == where("OPENAI_API_KEY", "openai", "openai_api_key") + "\n"
    # Both names taken: one line saying what to do, nothing stored.
    path.write_text(f"OPENAI_API_KEY={OPENAI}\n")
    err = initialised.fails("import", str(path))
    assert "openai has keys named imported and openai_api_key already" in err
    assert len(initialised.listing()) == 2


# -- failures in the middle: nothing stored, nothing rewritten -------------------------


def test_an_unknown_service_in_map_stores_and_rewrites_nothing(
    initialised: CLI, env_file: Path
) -> None:
    before = env_file.read_bytes()
    err = initialised.fails("import", str(env_file), "--rewrite", "--map", "MY_HF=huggingfase")
    assert err == (
        f"Error: --map MY_HF=huggingfase: {unknown_service('huggingfase', BUILTINS)}; "
        "nothing was stored"
    )
    assert initialised.listing() == []
    assert env_file.read_bytes() == before


def test_a_locked_database_stores_and_rewrites_nothing(
    initialised: CLI, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = env_file.read_bytes()
    # Wait for the lock 0.3 s instead of vaultd's 10 s: the outcome is the same.
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(initialised.db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer, holding on
        started = time.monotonic()
        err = initialised.fails("import", str(env_file), "--rewrite")
        assert time.monotonic() - started < 5
        assert err == "Error: database error: database is locked"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert initialised.listing() == []
    assert env_file.read_bytes() == before


def test_a_write_failing_after_the_first_key_rolls_back_every_key(
    initialised: CLI, env_file: Path
) -> None:
    """openai is inserted, then anthropic's insert fails: the transaction stores neither."""
    before = env_file.read_bytes()
    with sqlite3.connect(initialised.db_path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_anthropic BEFORE INSERT ON credentials"
            " WHEN NEW.service = 'anthropic'"
            " BEGIN SELECT RAISE(ABORT, 'simulated failure in the middle'); END"
        )
    conn.close()
    err = initialised.fails("import", str(env_file), "--rewrite")
    assert err == "Error: database error: simulated failure in the middle"
    assert initialised.listing() == []
    assert env_file.read_bytes() == before


# -- bad input: one clear line each, nothing stored ------------------------------------


def test_a_refused_value_names_the_variable_never_the_value(
    initialised: CLI, tmp_path: Path
) -> None:
    path = tmp_path / ".env"
    path.write_text(
        f"OPENAI_API_KEY=sk-proj-...\nANTHROPIC_API_KEY={ANTHROPIC}\n"
        'GITHUB_TOKEN=${GH_TOKEN}\nGEMINI_API_KEY="  padded-key-12345  "\n'
    )
    before = path.read_bytes()
    err = initialised.fails("import", str(path), "--rewrite")
    assert err == (
        "Error: OPENAI_API_KEY (line 1): its value looks like a placeholder (it contains ...), "
        "not a key; GITHUB_TOKEN (line 3) refers to another variable ($...), which vaultd "
        "import does not expand: put the key itself there; GEMINI_API_KEY (line 4): its value "
        "must not start or end with white space; nothing was stored"
    )
    assert_no_piece_of_any_secret(err)
    assert initialised.listing() == []
    assert path.read_bytes() == before


def make_bad_input(kind: str, tmp_path: Path, env: CLI) -> Path:
    path = tmp_path / "bad.env"
    if kind == "binary":
        path.write_bytes(b"OPENAI_API_KEY=" + OPENAI.encode() + b"\n\x00\x01\x02\xff")
    elif kind == "not UTF-8":
        path.write_bytes(b"OPENAI_API_KEY=" + OPENAI.encode() + b"\nNAME=caf\xe9\n")
    elif kind == "100 MB":
        with path.open("wb") as f:
            f.write(f"OPENAI_API_KEY={OPENAI}\n".encode())
            f.truncate(100 * 1024 * 1024)
    elif kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink to the key file":
        path.symlink_to(env.key_file)
    elif kind == "the database":
        path = env.db_path
    elif kind == "empty value":
        path.write_text(f"ANTHROPIC_API_KEY={ANTHROPIC}\nOPENAI_API_KEY=\n")
    elif kind == "no =":
        path.write_text(f"OPENAI_API_KEY={OPENAI}\n\n{OPENAI}\n")
    elif kind == "unclosed quote":
        path.write_text(f'OPENAI_API_KEY="{OPENAI}\n')
    elif kind == "missing":
        pass
    return path


BAD_INPUT = {
    "binary": "is a binary file (it has NUL bytes), not a .env file",
    "not UTF-8": (
        f"is not UTF-8 text (byte {len('OPENAI_API_KEY=' + OPENAI + '_NAME=caf')} is not): "
        "not a .env file"
    ),
    "100 MB": "is larger than 1024 KiB: not a .env file",
    "directory": "is a directory, not a .env file",
    "FIFO": "is a FIFO (named pipe), not a .env file",
    "symlink to the key file": "is vaultd's own file or directory (",
    "the database": "is vaultd's own file or directory (",
    "empty value": "OPENAI_API_KEY (line 2) has an empty value; nothing was stored",
    "no =": (
        ", line 3: there is no '='; each line is NAME=value or a # comment; nothing was stored"
    ),
    "unclosed quote": ", line 1: it could not be read (an unclosed quote?);",
    "missing": "does not exist; nothing was stored",
}


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_bad_input_is_one_clear_line_and_stores_nothing(
    initialised: CLI, tmp_path: Path, kind: str
) -> None:
    path = make_bad_input(kind, tmp_path, initialised)
    before = path.read_bytes() if path.is_file() and path.parent == tmp_path else None
    started = time.monotonic()
    err = initialised.fails("import", str(path), "--rewrite")
    assert time.monotonic() - started < 5  # a FIFO with no writer does not hang it
    if kind != "empty value":  # that one names the variable
        assert err.startswith(f"Error: {path}")
    assert BAD_INPUT[kind] in err
    assert err.endswith("nothing was stored")
    assert_no_piece_of_any_secret(err)
    assert initialised.listing() == []
    if before is not None:
        assert path.read_bytes() == before


def test_a_map_of_a_variable_the_file_does_not_set_is_refused(
    initialised: CLI, env_file: Path
) -> None:
    err = initialised.fails("import", str(env_file), "--map", "MY_GROQ=groq")
    assert (
        err == f"Error: --map MY_GROQ=...: {env_file} sets no variable MY_GROQ; nothing was stored"
    )
    assert initialised.listing() == []


def test_a_map_that_is_not_var_equals_service_is_a_usage_error(
    initialised: CLI, env_file: Path
) -> None:
    err = initialised.fails("import", str(env_file), "--map", "MY_HF", code=2)
    assert "'MY_HF' is not VAR=SERVICE" in err
    assert initialised.listing() == []
