"""dbwatch.ChangeWatch: every commit, from any connection or process, changes the stamp.

The proxy's cache trusts this to drop a revoked token before the next
request (tests/test_proxy.py revokes through the CLI and the API); here the
watch itself is held to it, commit by commit, also across the WAL being
checkpointed and restarted, and on its fallback.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.proxy_fixtures import Proxy
from vaultd.db import connect
from vaultd.dbwatch import ChangeWatch
from vaultd.proxy import CACHE

_INSERT = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "c.execute('INSERT INTO t VALUES (?)', [int(sys.argv[2])]); c.commit()"
)


def _write_elsewhere(path: Path, value: int) -> None:
    """Commit a row from another process, as the CLI would."""
    subprocess.run([sys.executable, "-c", _INSERT, str(path), str(value)], check=True, timeout=30)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault.db"
    db = connect(path, create=True)
    db.conn.execute("CREATE TABLE t (x INTEGER)")
    db.conn.commit()
    db.close()
    return path


def test_each_commit_from_another_process_changes_the_stamp(db_path: Path) -> None:
    db = connect(db_path)
    watch = ChangeWatch(db.conn, db_path)
    assert watch.reads_header
    seen = {watch.stamp()}
    for i in range(5):
        assert watch.stamp() in seen  # nothing committed: same stamp
        _write_elsewhere(db_path, i)
        stamp = watch.stamp()
        assert stamp not in seen, f"commit {i} went unnoticed"
        seen.add(stamp)
    db.close()


def test_commits_on_other_connections_of_this_process_and_its_own(db_path: Path) -> None:
    db = connect(db_path)
    watch = ChangeWatch(db.conn, db_path)
    other = sqlite3.connect(db_path)
    seen = {watch.stamp()}
    for i in range(20):
        conn = other if i % 2 else db.conn
        conn.execute("INSERT INTO t VALUES (?)", [i])
        conn.commit()
        stamp = watch.stamp()
        assert stamp not in seen, f"commit {i} went unnoticed"
        seen.add(stamp)
    other.close()
    db.close()


def test_a_commit_after_the_wal_restarts_is_seen(db_path: Path) -> None:
    """A checkpoint that truncates the WAL resets its frame count to where it
    started: the commit after it must still look new."""
    db = connect(db_path)
    watch = ChangeWatch(db.conn, db_path)
    seen = {watch.stamp()}
    for i in range(3):
        _write_elsewhere(db_path, i)
        seen.add(watch.stamp())
        other = sqlite3.connect(db_path)
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        other.close()
        _write_elsewhere(db_path, i)
        stamp = watch.stamp()
        assert stamp not in seen, f"commit after restart {i} went unnoticed"
        seen.add(stamp)
    db.close()


def test_without_a_wal_it_asks_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    watch = ChangeWatch(conn, path)
    assert not watch.reads_header
    before = watch.stamp()
    _write_elsewhere(path, 1)
    assert watch.stamp() != before
    conn.close()


async def test_the_daemons_cache_reads_the_header(proxy: Proxy) -> None:
    """So the proxy tests that revoke from another process exercise this path."""
    assert proxy.client.app[CACHE].watch.reads_header
