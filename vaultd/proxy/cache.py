"""What the proxy looks up on every request, kept in memory while the database is unchanged.

A proxied request needs its session (by token), its credential and that
credential's secret (with the patterns that redact every form of it). Reading
and decrypting them per request would cost more than all the rest of the
proxy; caching them must not delay a revocation by a single request. So every
cached answer is dropped the moment the database may have changed: SQLite's
``PRAGMA data_version`` moves when *another* connection (the CLI in another
process, the usage writer) commits, and the connection's ``total_changes``
moves when *this* one (the API) writes. The proxy checks both at the start
of every request (``refresh_for``), unless a check has run since that
request's head arrived (``arrivals.py``): that one already saw every commit
made before the request was sent. The lookups after it within that request
trust it. (The check is a few microseconds in a loop, but with its file locks
and cold caches about a tenth of a proxied call's CPU when made per request.)

(Not cheaper by reading the WAL-index header in ``vault.db-shm`` directly:
tried, and the daemon died of SIGBUS under concurrent CLI writers. Any
``close()`` of a descriptor of that file, ours or the one ``mmap`` keeps,
drops every POSIX lock the process holds on it, SQLite's too, and another
process then took itself for the only user and truncated the file under the
daemon's mapping. SQLite's files are opened by SQLite alone.)

Time-dependent checks (a session's or credential's expiry) are never cached:
callers check them on the cached objects each time.

Only hits are cached: what a client names and does not exist (a made-up token,
a made-up ``X-Vaultd-Credential``) costs it a lookup each time and the daemon
no memory, so the cache holds at most what the database holds.

A credential the vault does not hold may be a remote source's (DESIGN 13):
those are asked of the sources' catalog, which is memory already and
decides itself whether a secret is fresh; only "not in the vault, look
there" is remembered here, until the database changes.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from vaultd.core.credentials import CredentialStore
from vaultd.core.sessions import Session
from vaultd.core.vault import Vault
from vaultd.errors import NotFound, Unauthorized, VaultdError
from vaultd.models import Credential
from vaultd.proxy.arrivals import ARRIVALS
from vaultd.proxy.decisions import secret_forms
from vaultd.proxy.redact import Patterns
from vaultd.services import Service
from vaultd.sources.catalog import Catalog

log = logging.getLogger("vaultd.proxy")
# Bounds memory whatever callers do (every kind of entry counts); a full
# cache just starts over.
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential's plaintext and the patterns that redact it in an answer."""

    value: str
    patterns: Patterns


class ProxyCache:
    def __init__(self, vault: Vault, remote: Catalog | None = None) -> None:
        self.vault = vault
        # The remote sources' credentials (None or empty: none configured).
        self.remote = remote or None
        self._conn = vault.db.conn
        # Kept for the per-request check: ``conn.execute`` would make (and drop)
        # a cursor each time. ``fetchone`` of this one-row pragma steps it to
        # its end, so no read transaction stays open between requests.
        self._version = self._conn.cursor()
        self._stamp: tuple[int, int] | None = None
        # Heads numbered up to this had arrived when the last check ran.
        self._checked_arrival = 0
        self._sessions: dict[str, Session] = {}
        self._credentials: dict[tuple[str, str | None], Credential] = {}
        self._secrets: dict[str, Secret] = {}
        # Selectors the vault has no credential for, which the catalog is asked.
        self._remote_keys: set[tuple[str, str | None]] = set()

    def __len__(self) -> int:
        return (
            len(self._sessions)
            + len(self._credentials)
            + len(self._secrets)
            + len(self._remote_keys)
        )

    def refresh_for(self, arrival: int | None) -> None:
        """``refresh()``, unless one ran after the request's head arrived (number ``arrival``).

        ``None`` (a connection that does not number its heads) always checks.
        """
        if arrival is None or arrival > self._checked_arrival:
            self.refresh()

    def refresh(self) -> bool:
        """Forget everything if the database changed since the last call (then True)."""
        # Read first: every head numbered up to here arrived before this check.
        # Kept only once the check has run: one that raised vouches for nothing.
        arrived = ARRIVALS.latest
        stamp = (
            self._version.execute("PRAGMA data_version").fetchone()[0],
            self._conn.total_changes,
        )
        self._checked_arrival = arrived
        if stamp != self._stamp or len(self) > MAX_ENTRIES:
            self._sessions.clear()
            self._credentials.clear()
            self._secrets.clear()
            self._remote_keys.clear()
            self._stamp = stamp
            return True
        return False

    def clear(self) -> None:
        """Forget everything now (a reload changed what the cached answers were made by:
        a service's auth style shapes a secret's redaction patterns)."""
        self._sessions.clear()
        self._credentials.clear()
        self._secrets.clear()
        self._remote_keys.clear()
        self._stamp = None

    def rewarm(self) -> None:
        """Look up again, now, what the cache held, if the database changed meanwhile.

        Called right after the usage writer commits, which moves
        ``data_version`` and so empties the cache although nothing a proxied
        request depends on changed: the next request then finds its session,
        credential and secret in memory instead of reading (and decrypting)
        them itself, which costs an idle daemon most of a millisecond. This
        does exactly what that request would do, only earlier; later changes
        are caught by that request's own ``refresh``.
        """
        sessions = [(token, session.id) for token, session in self._sessions.items()]
        selectors = list(self._credentials)
        with_secret = set(self._secrets)
        if not self.refresh():
            return
        services = self.vault.config.services
        try:
            for token, session_id in sessions:
                # What ``authenticate`` finds by the token: a session's id and
                # token hash are fixed when it is made.
                try:
                    session = self.vault.sessions.get(session_id)
                except NotFound:
                    continue
                if session.status() == "active":
                    self._sessions[token] = session
            for service_name, wanted in selectors:
                credential = self.credential(service_name, wanted)
                service = services.get(service_name)
                if credential is not None and service is not None and credential.id in with_secret:
                    self.secret(credential, service)
        except (VaultdError, sqlite3.Error) as exc:
            # Whatever failed here fails again, and is reported, in the request.
            log.debug("proxy cache not refilled: %s", exc.__class__.__name__)

    def session(self, token: str) -> Session:
        """The active session of ``token``; ``Unauthorized`` otherwise (as the store says)."""
        # Keyed by the token itself: checking its form and hashing it on every
        # request cost more than the rest of this lookup. It is kept no longer
        # than the cache entry, in the memory that holds the plaintext keys
        # anyway (not dumpable: hardening.py); the database keeps only hashes.
        # (A dict compares two strings only once their randomly keyed hashes
        # match, so the lookup's timing tells a guesser nothing either.)
        session = self._sessions.get(token)
        if session is None:
            session = self.vault.sessions.authenticate(token)
            self._sessions[token] = session
        status = session.status()
        if status != "active":
            raise Unauthorized(f"the token is {status}")
        return session

    def credential(
        self, service: str, wanted: str | None, *, wait: bool = True
    ) -> Credential | None:
        """The default of ``service``, or its credential named (or with id) ``wanted``:
        the vault's first, then the remote sources' (``catalog.Pending`` while one
        has not listed yet, if ``wait``)."""
        key = (service, wanted)
        found = self._credentials.get(key)
        if found is not None:
            return found
        remote = self.remote
        if remote is None or key not in self._remote_keys:
            found = _lookup(self.vault.credentials, service, wanted)
            if found is not None:
                self._credentials[key] = found
                return found
            if remote is None:
                return None
            self._remote_keys.add(key)
        return remote.find(service, wanted, wait=wait)

    def secret(self, credential: Credential, service: Service, *, wait: bool = True) -> Secret:
        """The plaintext of ``credential`` (of ``service``) and its redaction patterns."""
        if credential.source != "local":
            return self._remote_secret(credential, service, wait)
        secret = self._secrets.get(credential.id)
        if secret is None:
            value = self.vault.credentials.reveal(self.vault.unlock(), credential)
            # The forms depend on how the service's auth style sends the key;
            # a credential belongs to one service, so its id is key enough.
            secret = Secret(value, Patterns(secret_forms(service, value)))
            self._secrets[credential.id] = secret
        return secret

    def _remote_secret(self, credential: Credential, service: Service, wait: bool) -> Secret:
        assert self.remote is not None  # only the catalog makes remote credentials
        try:
            value = self.remote.secret(credential.id, wait=wait)
        except VaultdError:
            # Dropped at its source (or too stale): no copy stays here either.
            self._secrets.pop(credential.id, None)
            raise
        secret = self._secrets.get(credential.id)
        # A new version (rotation) has new patterns; compared each time, as
        # the catalog may have read one since.
        if secret is None or secret.value != value:
            secret = Secret(value, Patterns(secret_forms(service, value)))
            self._secrets[credential.id] = secret
        return secret


def _lookup(store: CredentialStore, service: str, wanted: str | None) -> Credential | None:
    if wanted is None:
        return store.default_for(service)
    found = store.find(service, wanted)
    if found is not None:
        return found
    try:
        by_id = store.get(wanted)
    except NotFound:
        return None
    return by_id if by_id.service == service else None
