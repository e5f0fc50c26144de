"""The usage writer: nothing lost at shutdown, a full batch written early, failures retried."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from tests.support.audit import audit_row
from tests.support.cli import CLI
from vaultd.proxy import usage
from vaultd.proxy.counters import Snapshot
from vaultd.proxy.usage import UsageRecorder
from vaultd.store.audit import AuditRow


def entry(i: int) -> AuditRow:
    # Request ids say which entry a row is ("req-{at}-..."): at = now + i.
    return audit_row(START + i)


START = int(time.time())


@pytest.mark.timeout(30)
async def test_close_during_a_flush_write_loses_nothing(
    initialised: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing = threading.Event()
    real_write = UsageRecorder._write

    def slow_write(self: UsageRecorder, db: Database, batch: usage._Batch, snap: Snapshot) -> None:
        if not writing.is_set():
            writing.set()
            time.sleep(0.3)  # the first write, in the worker thread: close() arrives meanwhile
        real_write(self, db, batch, snap)

    monkeypatch.setattr(UsageRecorder, "_write", slow_write)
    recorder = UsageRecorder(
        initialised.db_path, interval=0.05, audit_keep_rows=1000, audit_keep_seconds=3600
    )
    await recorder.start()
    for i in range(5):
        recorder.record(entry(i))
    for _ in range(200):  # bounded: the flusher starts its write within 50 ms
        if writing.is_set():
            break
        await asyncio.sleep(0.01)
    assert writing.is_set()
    recorder.record(entry(5))  # after the batch was taken: the final flush writes it
    await recorder.close()
    with sqlite3.connect(Path(initialised.db_path)) as conn:
        ids = sorted(r[0] for r in conn.execute("SELECT request_id FROM audit"))
    assert ids == [audit_row(START + i)[1] for i in range(6)]


async def wait_for_rows(db_path: Path, count: int, seconds: float) -> int:
    """The audit table's row count, polled until it reaches ``count`` or time is up."""
    rows = 0
    for _ in range(int(seconds / 0.02)):  # bounded
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        if rows >= count:
            break
        await asyncio.sleep(0.02)
    return rows


@pytest.mark.timeout(30)
async def test_a_full_batch_is_written_before_the_interval(initialised: CLI) -> None:
    # An hour's interval: only the batch's length can start this flush.
    recorder = UsageRecorder(
        initialised.db_path, interval=3600, audit_keep_rows=100_000, audit_keep_seconds=3600
    )
    await recorder.start()
    try:
        for i in range(usage.FLUSH_ROWS - 1):
            recorder.record(entry(i))
        await asyncio.sleep(0.3)
        assert recorder.pending_rows() == usage.FLUSH_ROWS - 1  # one short: it waits
        recorder.record(entry(usage.FLUSH_ROWS))
        written = await wait_for_rows(Path(initialised.db_path), usage.FLUSH_ROWS, 10)
        assert written == usage.FLUSH_ROWS
        assert recorder.pending_rows() == 0
    finally:
        await recorder.close()


@pytest.mark.timeout(30)
async def test_a_failing_write_is_retried_once_an_interval_even_with_a_full_batch(
    initialised: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    real_write = UsageRecorder._write
    failing = True

    def locked(self: UsageRecorder, db: Database, batch: usage._Batch, snap: Snapshot) -> None:
        attempts.append(len(batch.entries))
        if failing:
            raise sqlite3.OperationalError("database is locked")
        real_write(self, db, batch, snap)

    monkeypatch.setattr(UsageRecorder, "_write", locked)
    recorder = UsageRecorder(
        initialised.db_path, interval=0.2, audit_keep_rows=100_000, audit_keep_seconds=3600
    )
    await recorder.start()
    try:
        total = 3 * usage.FLUSH_ROWS
        for i in range(total):
            recorder.record(entry(i))
            if i % 100 == 0:
                await asyncio.sleep(0)  # the flusher may run between requests
        await asyncio.sleep(0.7)
        # The first full batch, then once per interval: never once per request.
        assert 1 <= len(attempts) <= 6
        assert recorder.pending_rows() == total  # kept, nothing dropped
        failing = False
        assert await wait_for_rows(Path(initialised.db_path), total, 10) == total
    finally:
        await recorder.close()
