"""Write-behind usage tracking: last use and count per credential, last use per
session, and the audit rows, all written in one transaction per flush.

Proxied requests only append to memory; a background task flushes every
``usage_flush_interval`` (sooner when ``FLUSH_ROWS`` rows wait) and once
more on shutdown. A hard crash loses at most
what arrived since the last flush (README says so). A failed flush keeps its
batch and retries, so a busy database delays records but does not drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from vaultd.core.limits import utc_day
from vaultd.models import is_remote_id, now
from vaultd.proxy.counters import Counters, Snapshot
from vaultd.proxy.totals import Totals
from vaultd.store import audit, counts
from vaultd.store.audit import ROW_AT, ROW_CREDENTIAL_ID, ROW_SESSION_ID, ROW_STATUS, AuditRow
from vaultd.store.db import connect, write_transaction

log = logging.getLogger("vaultd.usage")
PRUNE_EVERY = 60  # seconds
# A batch this long is written without waiting for the interval. Under load a
# whole second's rows (thousands at a few hundred bytes each, and the flat
# parameter lists the write builds from them) were the largest part of the
# daemon's peak memory: bounded so, 3 to 4 MiB less in bench/proxy_bench.py.
FLUSH_ROWS = 1024


@dataclass
class _Batch:
    credentials: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (last, count)
    sessions: dict[str, int] = field(default_factory=dict)  # id -> last
    entries: list[AuditRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.credentials or self.sessions or self.entries)

    def merge(self, newer: _Batch) -> None:
        for cid, (last, count) in newer.credentials.items():
            old_last, old_count = self.credentials.get(cid, (0, 0))
            self.credentials[cid] = (max(old_last, last), old_count + count)
        for sid, last in newer.sessions.items():
            self.sessions[sid] = max(self.sessions.get(sid, 0), last)
        self.entries.extend(newer.entries)


class UsageRecorder:
    """Collects usage in memory and writes it behind on its own database connection."""

    def __init__(
        self,
        db_path: Path,
        *,
        interval: float,
        audit_keep_rows: int,
        audit_keep_seconds: int,
        after_write: Callable[[], None] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.db_path = db_path
        # The limits' counters, written in the same transaction as the rows.
        self.counters = counters
        # Run on the event loop after each flush that wrote (the proxy cache's rewarm).
        self.after_write = after_write
        # Run on the event loop before each flush: what is still to be recorded
        # (the proxy's requests settled behind, Forwarder.settle_behind; set
        # once the Forwarder, which records through this, exists).
        self.before_flush: Callable[[], None] | None = None
        self.interval = interval
        self.audit_keep_rows = audit_keep_rows
        self.audit_keep_seconds = audit_keep_seconds
        self._pending = _Batch()
        self._db: Database | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Set when the batch reaches FLUSH_ROWS: the flusher then writes at once.
        self._full = asyncio.Event()
        self._pruned_at = 0
        # Since start, for GET /metrics: what the audit log gained, and the writer's failures.
        self.totals = Totals()
        self.flush_failures = 0

    # -- recording (hot path: memory only) -------------------------------

    def record(self, row: AuditRow) -> None:
        """One proxied request: its audit row, and use of its credential and session."""
        pending = self._pending
        entries = pending.entries
        entries.append(row)
        if len(entries) >= FLUSH_ROWS:
            self._full.set()
        self.totals.count(row)
        at, session_id, credential_id = row[ROW_AT], row[ROW_SESSION_ID], row[ROW_CREDENTIAL_ID]
        if session_id is not None:
            sessions = pending.sessions
            sessions[session_id] = max(sessions.get(session_id, 0), at)
        if credential_id is not None and row[ROW_STATUS] < 400:
            last, count = pending.credentials.get(credential_id, (0, 0))
            pending.credentials[credential_id] = (max(last, at), count + 1)

    def pending_rows(self) -> int:
        """Audit rows recorded and not yet written."""
        return len(self._pending.entries)

    def lag_seconds(self, at: float) -> float:
        """How long the oldest row not yet written has waited (0 when none waits).

        A failed flush puts its batch back in front, so the first row is the oldest.
        """
        entries = self._pending.entries
        return max(0.0, at - entries[0][ROW_AT]) if entries else 0.0

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        # Its own connection: flushes run in a worker thread, and a sqlite3
        # connection must not be used by two threads at once.
        self._db = await asyncio.to_thread(connect, self.db_path)
        # Usage may lose one flush interval in a crash anyway (README); NORMAL
        # keeps WAL commits atomic and skips the fsync that FULL adds to each.
        self._db.conn.execute("PRAGMA synchronous = NORMAL")
        # It appends rows and updates a few: a small page cache does (SQLite's
        # default, 2 MiB, filled up with audit pages and stayed).
        self._db.conn.execute("PRAGMA cache_size = -256")
        self._task = asyncio.create_task(self._run(), name="vaultd-usage-flusher")

    async def _run(self) -> None:
        retrying = False
        while True:
            if retrying:
                # After a failed write the whole interval, full batch or not:
                # a locked database is not retried once per request.
                await asyncio.sleep(self.interval)
            else:
                await self._interval_or_full_batch()
            failures = self.flush_failures
            await self.flush()
            retrying = self.flush_failures != failures

    async def _interval_or_full_batch(self) -> None:
        full = self._full
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.interval):
                await full.wait()
        full.clear()

    async def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()
        async with self._lock:
            snap = self.counters.snapshot() if self.counters is not None else Snapshot()
            if (not self._pending and not snap) or self._db is None:
                return
            batch, self._pending = self._pending, _Batch()
            try:
                await asyncio.to_thread(self._write, self._db, batch, snap)
            except Exception as exc:
                # Kept and retried at the next flush, never dropped. SQLite's
                # messages hold no values, so no secret can reach the log.
                log.warning("usage flush failed, will retry: %s", exc)
                self.flush_failures += 1
                batch.merge(self._pending)
                self._pending = batch
                return
            if self.counters is not None:
                self.counters.written(snap)
            if self.after_write is not None:
                try:
                    self.after_write()
                except Exception as exc:
                    # A hook's failure must not stop the flusher (nor lose the batch).
                    log.warning("after a usage flush: %s", exc.__class__.__name__)

    def _write(self, db: Database, batch: _Batch, snap: Snapshot) -> None:
        with write_transaction(db) as conn:
            # Absolute values: a batch retried after a failure writes the same.
            counts.write(conn, snap.sessions.items(), snap.days.items())
            used = batch.credentials.items()
            conn.executemany(
                "UPDATE credentials SET last_used_at = max(coalesce(last_used_at, 0), ?),"
                " use_count = use_count + ? WHERE id = ?",
                [(last, count, cid) for cid, (last, count) in used if not is_remote_id(cid)],
            )
            # A remote source's credential has no row here: its use has its own.
            conn.executemany(
                "INSERT INTO remote_uses (id, last_used_at, use_count) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET"
                " last_used_at = max(coalesce(last_used_at, 0), excluded.last_used_at),"
                " use_count = use_count + excluded.use_count",
                [(cid, last, count) for cid, (last, count) in used if is_remote_id(cid)],
            )
            conn.executemany(
                "UPDATE sessions SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?",
                [(last, sid) for sid, last in batch.sessions.items()],
            )
            for sql, params in audit.insert_batches(batch.entries):
                conn.execute(sql, params)
            # Pruning is a range delete: once a minute is plenty to keep the bound.
            if now() - self._pruned_at >= PRUNE_EVERY:
                audit.prune(
                    db,
                    keep_rows=self.audit_keep_rows,
                    keep_seconds=self.audit_keep_seconds,
                    now=now(),
                )
                counts.prune_days(conn, utc_day(now()))
                self._pruned_at = now()

    async def close(self) -> None:
        """Stop the flusher and write what is left (called on shutdown)."""
        if self._task is not None:
            # Cancel it only between flushes: cancelled while its write runs in
            # the worker thread, the flusher would let go of the lock with the
            # batch neither written nor put back, and the final flush below
            # would use the connection beside that thread (a clean stop that
            # loses answered calls' rows).
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
