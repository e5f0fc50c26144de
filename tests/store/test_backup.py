"""``vaultd backup``: an online copy that restores and opens with the same key."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CLI
from vaultd.config import load_config
from vaultd.core.vault import open_vault

SECRET = "sk-proj-BACKUPbackupBACKUP0001"


def restore(backup: Path, data_dir: Path) -> None:
    """What the README says: stop the daemon, copy the file in as vault.db."""
    data_dir.mkdir(mode=0o700, parents=True)
    shutil.copyfile(backup, data_dir / "vault.db")
    (data_dir / "vault.db").chmod(0o600)


def test_backup_restores_and_reveals_with_the_same_key(initialised: CLI, tmp_path: Path) -> None:
    added = initialised.add("openai", "primary", SECRET)
    target = tmp_path / "vault.backup"
    result = initialised.ok("backup", str(target))
    assert SECRET not in result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # Self-contained: no -wal beside it that a restore would have to carry along.
    assert not Path(f"{target}-wal").exists()

    new_dir = tmp_path / "restored"
    restore(target, new_dir)
    config = load_config(data_dir=str(new_dir))
    assert config.key_file == initialised.key_file
    with open_vault(config) as vault:
        credential = vault.credentials.get(added["id"])
        assert vault.credentials.reveal(vault.unlock(), credential) == SECRET
    # The CLI works on the restored copy too.
    listed = initialised.ok("--data-dir", str(new_dir), "list", "--json").stdout
    assert added["id"] in listed


def test_backup_never_overwrites(initialised: CLI, tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.write_bytes(b"precious")
    line = initialised.fails("backup", str(target))
    assert "already exists" in line
    assert target.read_bytes() == b"precious"


def test_backup_without_a_vault_is_one_line(cli_env: CLI, tmp_path: Path) -> None:
    line = cli_env.fails("backup", str(tmp_path / "b.db"))
    assert "vaultd init" in line
    assert not (tmp_path / "b.db").exists()


def test_backup_while_another_connection_writes(initialised: CLI, tmp_path: Path) -> None:
    initialised.add("openai", "primary", SECRET)
    other = sqlite3.connect(str(initialised.db_path), check_same_thread=False)
    try:
        other.execute("PRAGMA journal_mode = WAL")
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO meta (key, value) VALUES ('written_during_backup', x'01')")
        # The writer commits a moment after the backup started.
        committer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        committer.start()
        started = time.monotonic()
        target = tmp_path / "during.backup"
        initialised.ok("backup", str(target))
        committer.join(timeout=10)
        assert not committer.is_alive()
    finally:
        other.close()
    assert time.monotonic() - started < 10  # did not wait for busy_timeout
    copy = sqlite3.connect(str(target))
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT count(*) FROM credentials").fetchone()[0] == 1
    finally:
        copy.close()
    new_dir = tmp_path / "restored"
    restore(target, new_dir)
    with open_vault(load_config(data_dir=str(new_dir))) as vault:
        [credential] = vault.credentials.list()
        assert vault.credentials.reveal(vault.unlock(), credential) == SECRET


# -- a directory where someone else could swap the file: refused ---------------------


def test_a_directory_others_can_write_without_sticky_bit_is_refused(
    initialised: CLI, tmp_path: Path
) -> None:
    """The attack: another user renames their own file over the new backup before
    SQLite reopens it by name, in a 0777 directory without the sticky bit."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    line = initialised.fails("backup", str(shared / "vault.backup"))
    assert "others can write to" in line and "no sticky bit" in line
    assert list(shared.iterdir()) == []


def test_a_directory_owned_by_another_user_is_refused(initialised: CLI, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    try:
        os.chown(theirs, 65534, 65534)
    except PermissionError:
        pytest.skip("chown to another user needs root")
    line = initialised.fails("backup", str(theirs / "vault.backup"))
    assert "belongs to uid 65534" in line
    assert list(theirs.iterdir()) == []


def test_a_sticky_shared_directory_is_fine(initialised: CLI, tmp_path: Path) -> None:
    """As /tmp: others can write there but cannot rename over a file of ours."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    initialised.ok("backup", str(sticky / "vault.backup"))
    assert stat.S_IMODE((sticky / "vault.backup").stat().st_mode) == 0o600


def test_a_file_swapped_in_while_sqlite_opens_it_is_detected(
    initialised: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself, made certain: the swap happens right before SQLite opens the name."""
    target = tmp_path / "vault.backup"
    planted = tmp_path / "planted"
    planted.write_bytes(b"")
    real_connect = sqlite3.connect

    def swap_then_connect(database: str, **kwargs: Any) -> sqlite3.Connection:
        if database == str(target):
            os.rename(planted, target)  # what the other user's rename(2) does
        connection: sqlite3.Connection = real_connect(database, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", swap_then_connect)
    line = initialised.fails("backup", str(target))
    assert "was replaced while the backup was written" in line
    assert target.exists()  # not ours: left as it is, not deleted, not reported as a backup
