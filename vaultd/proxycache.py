"""What the proxy looks up on every request, kept in memory while the database is unchanged.

A proxied request needs its session (by token hash), its credential and that
credential's secret (with the patterns that redact every form of it). Reading
and decrypting them per request would cost more than all the rest of the
proxy; caching them must not delay a revocation by a single request. So every
cached answer is dropped the moment the database may have changed: SQLite's
``PRAGMA data_version`` moves when *another* connection (the CLI in another
process, the usage writer) commits, and the connection's ``total_changes``
moves when *this* one (the API) writes. The proxy calls ``refresh()`` once at
the start of every request to check both, a few microseconds; the lookups
after it within that request trust it.

Time-dependent checks (a session's or credential's expiry) are never cached:
callers check them on the cached objects each time.

Only hits are cached: what a client names and does not exist (a made-up token,
a made-up ``X-Vaultd-Credential``) costs it a lookup each time and the daemon
no memory, so the cache holds at most what the database holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaultd.credentials import CredentialStore
from vaultd.errors import NotFound, Unauthorized
from vaultd.models import Credential
from vaultd.redact import Patterns
from vaultd.services import Service
from vaultd.sessions import TOKEN_RE, Session, token_hash
from vaultd.upstream import secret_forms
from vaultd.vault import Vault

# Bounds memory whatever callers do (every kind of entry counts); a full
# cache just starts over.
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential's plaintext and the patterns that redact it in an answer."""

    value: str
    patterns: Patterns


class ProxyCache:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._stamp: tuple[int, int] | None = None
        self._sessions: dict[str, Session] = {}
        self._credentials: dict[tuple[str, str | None], Credential] = {}
        self._secrets: dict[str, Secret] = {}

    def __len__(self) -> int:
        return len(self._sessions) + len(self._credentials) + len(self._secrets)

    def refresh(self) -> None:
        """Forget everything if the database changed since the last call."""
        conn = self.vault.db.conn
        stamp = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if stamp != self._stamp or len(self) > MAX_ENTRIES:
            self._sessions.clear()
            self._credentials.clear()
            self._secrets.clear()
            self._stamp = stamp

    def session(self, token: str) -> Session:
        """The active session of ``token``; ``Unauthorized`` otherwise (as the store says)."""
        if not TOKEN_RE.fullmatch(token):
            raise Unauthorized("the token is missing or malformed")
        digest = token_hash(token)
        session = self._sessions.get(digest)
        if session is None:
            session = self.vault.sessions.authenticate(token)
            self._sessions[digest] = session
        status = session.status()
        if status != "active":
            raise Unauthorized(f"the token is {status}")
        return session

    def credential(self, service: str, wanted: str | None) -> Credential | None:
        """The default of ``service``, or its credential named (or with id) ``wanted``."""
        key = (service, wanted)
        found = self._credentials.get(key)
        if found is None:
            found = _lookup(self.vault.credentials, service, wanted)
            if found is not None:
                self._credentials[key] = found
        return found

    def secret(self, credential: Credential, service: Service) -> Secret:
        """The plaintext of ``credential`` (of ``service``) and its redaction patterns."""
        secret = self._secrets.get(credential.id)
        if secret is None:
            value = self.vault.credentials.reveal(self.vault.unlock(), credential)
            # The forms depend on how the service's auth style sends the key;
            # a credential belongs to one service, so its id is key enough.
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
