"""The usage writer's shutdown: a flush still writing when close() is called loses nothing."""

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
