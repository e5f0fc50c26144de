"""``vaultd run``'s session as a lease: short, and renewed while the command lives.

A token that lived as long as ``--ttl`` said either died under a long agent
or notebook session (an hour by default), or, made long, outlived a
``vaultd run`` killed with SIGKILL, which never gets to revoke it. So the
session ``run`` makes ends ``RUN_LEASE`` seconds ahead, and a thread of
``vaultd run`` moves that end on every ``RUN_LEASE / RENEWALS`` seconds
while the command runs: the token never expires under a live command, and
stops working at most ``RUN_LEASE`` seconds after ``vaultd run`` dies,
however it dies. ``--ttl`` caps the total.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from sqlite_utils import Database

from vaultd.core.sessions import SessionStore
from vaultd.errors import NotFound, VaultdError
from vaultd.models import now
from vaultd.store.db import BUSY_TIMEOUT_MS, connect

# Five minutes: how long a token of a killed `vaultd run` still works, so
# short; and long enough that a database busy for a while (a backup, a
# rekey), or a machine under load, costs a renewal or two, never the token.
RUN_LEASE = 300
# Renewals per lease: four in a row may fail before the token lapses.
RENEWALS = 5
# The longest the thread sleeps at a time. Its sleep runs on the monotonic
# clock, which stands still while the machine is suspended, but the lease
# ends by the wall clock: on waking it must look at the time soon.
TICK = 5.0
# Seconds of lease instead of RUN_LEASE. For tests, which cannot wait minutes
# for a lease of a killed `vaultd run` to end; deliberately not in --help.
LEASE_ENV = "VAULTD_RUN_LEASE"

# Held by the renewal thread whenever it works (SQLite, its locks, stderr),
# and, through ``os.register_at_fork``, by every fork that will run Python in
# the child before exec: a ``preexec_fn``, such as ``run --isolate``'s
# Landlock restriction (isolation/launch.py). So no child starts as a copy of
# this process taken in the middle of a renewal, holding a lock that nothing
# in it will ever release. (A fork without ``preexec_fn`` runs no Python in
# the child, and the child execs at once: nothing to hold.)
_WORKING = threading.Lock()
os.register_at_fork(
    before=_WORKING.acquire,
    after_in_parent=_WORKING.release,
    after_in_child=_WORKING.release,
)


def lease_length(env: Mapping[str, str]) -> int:
    """``RUN_LEASE``, or the seconds ``$VAULTD_RUN_LEASE`` says (tests)."""
    raw = env.get(LEASE_ENV)
    if raw is None:
        return RUN_LEASE
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise VaultdError(f"{LEASE_ENV} must be a whole number of seconds, not {raw[:20]!r}")
    return int(raw)


class Lease:
    """Renews session ``session_id`` of the vault at ``db_path`` while it is open.

    ``length`` seconds ahead each time, never past ``cap`` (a Unix time;
    None: for as long as it runs). ``say`` prints one line for the user.
    Use as a context manager around the command's run.
    """

    def __init__(
        self,
        db_path: Path,
        session_id: str,
        length: int,
        cap: int | None,
        say: Callable[[str], None],
    ) -> None:
        self._db_path = db_path
        self._session_id = session_id
        self._length = length
        self._cap = cap
        self._say = say
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: Database | None = None
        self._failing = False

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._run, name="vaultd-run-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            # A renewal under way waits for SQLite at most its busy timeout.
            self._thread.join(timeout=BUSY_TIMEOUT_MS / 1000 + 1)
            self._thread = None

    def _run(self) -> None:
        every = self._length / RENEWALS
        due = time.time() + every
        try:
            while not self._stop.wait(min(TICK, every, max(0.0, due - time.time()))):
                if time.time() < due:
                    continue
                with _WORKING:
                    if self._stop.is_set() or not self._renew():
                        return
                # After a failure too: the lease has RENEWALS - 1 more chances.
                due = time.time() + every
        finally:
            with _WORKING:
                if self._db is not None:
                    self._db.close()
                    self._db = None

    def _renew(self) -> bool:
        """Move the lease on; False once there is nothing more to renew."""
        try:
            if self._db is None:
                # Its own connection: the main thread's is not to be shared.
                self._db = connect(self._db_path)
            session = SessionStore(self._db).extend(
                self._session_id, now() + self._length, cap=self._cap
            )
        except NotFound:
            self._say(
                "vaultd run: the session is gone (deleted); the command's token no longer works"
            )
            return False
        except (VaultdError, sqlite3.Error, OSError) as exc:
            if not self._failing:
                # Once, not every try; SQLite's messages hold no values.
                self._say(f"vaultd run: could not renew the session, trying again: {exc}")
                self._failing = True
            return True
        if self._failing:
            self._say("vaultd run: the session is renewed again")
            self._failing = False
        if session.revoked_at is not None:
            self._say(
                "vaultd run: the session was revoked (vaultd session revoke); "
                "the command's token no longer works"
            )
            return False
        # At --ttl's cap: it ends there, and nothing more is to be done.
        return self._cap is None or session.expires_at is None or session.expires_at < self._cap
