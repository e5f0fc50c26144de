"""Every remote credential the daemon knows of, and whether its secret may be served now.

Pure and synchronous: the proxy asks it on a request's path and must not
wait on it. ``source.Source`` fills it after each read of the server; this
module only decides (DESIGN 13):

- a secret read less than ``refresh_interval`` ago is served (fresh);
- an older one waits for one read of the server if the server is not known
  to be down (``Pending``: the proxy waits and asks again, once);
- while the server is unreachable, sealed or rate-limiting, the last good
  value serves until ``max_stale``, then ``source-unavailable``;
- a 403 or a 404 dropped the secret when it came: ``source-unauthorized``
  or ``credential-deleted`` at once.

Secrets live here, in memory only, and never in a ``repr`` or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vaultd.models import Credential, hint_for, remote_id
from vaultd.sourceconfig import SourceSettings
from vaultd.sources.errors import (
    CredentialDeleted,
    SourceSecretInvalid,
    SourceUnauthorized,
    SourceUnavailable,
)
from vaultd.sources.kv import RemoteMeta, secret_path

# What a failed read leaves: "unreachable" keeps the last good value (until
# max_stale); the others drop it at once.
UNREACHABLE = "unreachable"
UNAUTHORIZED = "unauthorized"
DELETED = "deleted"
INVALID = "invalid"
OK = "ok"
STALE = "stale"
# Entries no longer listed that a source keeps "deleted" at most (``forget``).
MAX_GONE = 1000
_REFUSALS = {
    UNAUTHORIZED: SourceUnauthorized,
    DELETED: CredentialDeleted,
    INVALID: SourceSecretInvalid,
}


class Pending(Exception):
    """The answer needs one read of a source first: the proxy awaits it, then asks
    again with ``wait=False``. ``entry_id`` None: the source's first listing."""

    def __init__(self, source: str, entry_id: str | None) -> None:
        super().__init__(source)
        self.source = source
        self.entry_id = entry_id


@dataclass(eq=False)
class Entry:
    """One remote credential: ``prefix/service/name`` of one source."""

    source: str
    service: str
    name: str
    path: str
    id: str
    seen_at: int
    value: str | None = field(default=None, repr=False)
    meta: RemoteMeta | None = None
    # Wall-clock second of the last read that returned this value.
    fetched_at: float | None = None
    # The last read's outcome: OK, or why it failed (a constant above).
    status: str = OK
    # One line for a person: why the last read failed (never a value).
    error: str | None = None
    # When a listing first lacked it (``Catalog.forget``).
    gone_at: float | None = None
    # Moves on every drop: a read sent before one must not bring the secret back.
    generation: int = 0
    _credential: Credential | None = field(default=None, repr=False)

    def credential(self, is_default: bool) -> Credential:
        """This entry as the proxy and the API see a credential (no secret in it)."""
        cached = self._credential
        if cached is None or cached.is_default != is_default:
            meta = self.meta
            written = meta.written_at if meta is not None and meta.written_at else self.seen_at
            cached = self._credential = Credential(
                id=self.id,
                service=self.service,
                name=self.name,
                type=meta.type if meta is not None else "api_key",
                hint=hint_for(self.value) if self.value is not None else None,
                metadata=dict(meta.metadata) if meta is not None else {},
                is_default=is_default,
                # When vaultd first saw it, and when its current version was written.
                created_at=min(self.seen_at, written),
                updated_at=written,
                last_used_at=None,
                use_count=0,
                expires_at=meta.expires_at if meta is not None else None,
                limits=meta.limits if meta is not None else None,
                source=self.source,
            )
        return cached

    def stored(self, value: str, meta: RemoteMeta, at: float, generation: int) -> None:
        """A good read, sent at ``generation``: ``value`` is the secret from now on,
        unless the secret was dropped since the read was sent."""
        if generation != self.generation:
            return
        if value != self.value or meta != self.meta:
            self._credential = None
        self.value, self.meta, self.fetched_at = value, meta, at
        self.status, self.error, self.gone_at = OK, None, None

    def failed(self, status: str, error: str) -> None:
        """A failed read: unreachable keeps the value; the others drop it now."""
        self.status, self.error = status, error
        if status != UNREACHABLE:
            self.generation += 1
            if self.value is not None:
                self.value = None
                self._credential = None


@dataclass
class SourceState:
    """What the catalog knows of one source as a whole."""

    settings: SourceSettings
    # The first listing and reads are done (whatever their outcome).
    listed: bool = False
    # While True (from a failed round or read to the next good round) the server
    # is taken as down: no request waits on it.
    down: bool = False
    # Why the last round failed as a whole (unreachable, unauthorized), or None.
    error: str | None = None
    status: str = OK


class Catalog:
    """The remote credentials of every source, in config order."""

    def __init__(self, sources: Sequence[SourceSettings]) -> None:
        self.sources: dict[str, SourceState] = {s.name: SourceState(s) for s in sources}
        self._by_id: dict[str, Entry] = {}
        # (service, name) -> entries, the first source's first. A name two
        # sources share is served from the first (doctor says so).
        self._by_name: dict[tuple[str, str], list[Entry]] = {}
        self._by_service: dict[str, list[Entry]] = {}

    def __bool__(self) -> bool:
        return bool(self.sources)

    # -- filled by the sources --------------------------------------------

    def entry(self, source: str, service: str, name: str) -> Entry:
        """The entry of ``source``'s ``service/name``, made the first time it is listed."""
        cid = remote_id(source, service, name)
        found = self._by_id.get(cid)
        if found is None:
            settings = self.sources[source].settings
            found = Entry(
                source, service, name, secret_path(settings, service, name), cid, int(time.time())
            )
            self._by_id[cid] = found
            self._by_service.setdefault(service, []).append(found)
            names = self._by_name.setdefault((service, name), [])
            names.append(found)
            order = list(self.sources)
            names.sort(key=lambda e: order.index(e.source))
        return found

    def forget(self, source: str, keep: set[str], now: float | None = None) -> None:
        """``source``'s entries whose ids are not in ``keep`` are no longer listed: each is
        ``deleted`` at once, and forgotten ``max_stale`` later (until then a request for
        it hears why it fails, rather than that it never existed)."""
        at = time.time() if now is None else now
        max_stale = self.sources[source].settings.max_stale
        gone: list[Entry] = []
        for cid, entry in list(self._by_id.items()):
            if entry.source != source or cid in keep:
                continue
            if entry.gone_at is None:
                entry.gone_at = at
                entry.failed(DELETED, "it is no longer listed by its source")
            if at - entry.gone_at >= max_stale:
                self._remove(entry)
            else:
                gone.append(entry)
        # A server that lists new names each round must not grow this without
        # bound: past MAX_GONE, the longest gone are forgotten now.
        gone.sort(key=lambda e: (e.gone_at or 0.0, e.id))
        for entry in gone[: max(0, len(gone) - MAX_GONE)]:
            self._remove(entry)

    def _remove(self, entry: Entry) -> None:
        del self._by_id[entry.id]
        self._by_service[entry.service].remove(entry)
        if not self._by_service[entry.service]:
            del self._by_service[entry.service]
        names = self._by_name[(entry.service, entry.name)]
        names.remove(entry)
        if not names:
            del self._by_name[(entry.service, entry.name)]

    def entries(self, source: str | None = None) -> Iterator[Entry]:
        for entry in self._by_id.values():
            if source is None or entry.source == source:
                yield entry

    def get(self, credential_id: str) -> Entry | None:
        return self._by_id.get(credential_id)

    # -- asked by the proxy and the API ------------------------------------

    def find(self, service: str, wanted: str | None, *, wait: bool) -> Credential | None:
        """The default of ``service`` or its remote credential named (or with id) ``wanted``.

        ``Pending`` while a source has not finished its first listing and the
        answer could be there (``wait`` only).
        """
        # Once: which entry is the default is also what the found one says of itself.
        default = self._default(service)
        entry = default if wanted is None else self.named(service, wanted)
        if entry is None:
            for name, state in self.sources.items():
                if wait and not state.listed:
                    raise Pending(name, None)
                # It may be there: a source that cannot be read cannot say it is not.
                if state.status in (UNREACHABLE, UNAUTHORIZED):
                    error = (
                        SourceUnauthorized if state.status == UNAUTHORIZED else SourceUnavailable
                    )
                    what = f"{wanted!r} of {service}" if wanted else f"a default for {service}"
                    raise error(
                        f"the vault has no credential {what}, and source {name} cannot be "
                        f"read: {state.error}"
                    )
            return None
        return entry.credential(is_default=default is entry)

    def named(self, service: str, wanted: str) -> Entry | None:
        """``service``'s remote credential with id ``wanted``, else named ``wanted``.

        The id first: a source may list a name that is another source's id,
        and a client that pinned an id must get that one.
        """
        by_id = self._by_id.get(wanted)
        if by_id is not None and by_id.service == service:
            return by_id
        names = self._by_name.get((service, wanted))
        return names[0] if names else None

    def _default(self, service: str) -> Entry | None:
        """The one marked ``default = "true"`` in its custom_metadata (the first
        source's, then by name), else the service's only remote credential."""
        candidates = self._by_service.get(service, [])
        marked = [e for e in candidates if e.meta is not None and e.meta.default]
        if marked:
            order = list(self.sources)
            return min(marked, key=lambda e: (order.index(e.source), e.name))
        return candidates[0] if len(candidates) == 1 else None

    def secret(self, credential_id: str, *, wait: bool, now: float | None = None) -> str:
        """The secret to send for the remote credential ``credential_id``, or why not.

        ``Pending`` when a read of the server should come first (``wait``
        only, and never while the server is known to be down).
        """
        entry = self._by_id.get(credential_id)
        if entry is None:
            raise CredentialDeleted("the credential is no longer listed by its source")
        state = self.sources[entry.source]
        settings = state.settings
        label = f"{entry.service}/{entry.name} of source {entry.source}"
        refusal = _REFUSALS.get(entry.status)
        if refusal is not None:
            raise refusal(f"{label}: {entry.error}")
        at = time.time() if now is None else now
        down = state.down
        if entry.value is None or entry.fetched_at is None:
            if wait and not down:
                raise Pending(entry.source, entry.id)
            raise SourceUnavailable(f"{label} could not be read: {entry.error or 'not yet read'}")
        age = at - entry.fetched_at
        if age < settings.refresh_interval:
            return entry.value
        if wait and not down:
            raise Pending(entry.source, entry.id)
        if age <= settings.max_stale:
            return entry.value
        raise SourceUnavailable(
            f"{label} was last read {int(age)}s ago, more than max_stale "
            f"({settings.max_stale}s): {entry.error or 'the source did not answer'}"
        )

    def status(self, entry: Entry, now: float | None = None) -> str:
        """``ok | stale | unauthorized | deleted | unreachable | invalid`` (DESIGN 13)."""
        if entry.status in _REFUSALS:
            return entry.status
        if entry.value is None or entry.fetched_at is None:
            return UNREACHABLE
        age = (time.time() if now is None else now) - entry.fetched_at
        settings = self.sources[entry.source].settings
        if age < settings.refresh_interval and entry.status == OK:
            return OK
        return STALE if age <= settings.max_stale else UNREACHABLE

    def listing(self, service: str | None = None) -> list[Credential]:
        """Every remote credential (of ``service``), ordered by source, service and
        name, with its ``remote`` state; the secret is not in it."""
        order = list(self.sources)
        chosen = [e for e in self._by_id.values() if service is None or e.service == service]
        chosen.sort(key=lambda e: (order.index(e.source), e.service, e.name))
        # Once per service, not per entry: a source may list thousands.
        defaults = {s: self._default(s) for s in {e.service for e in chosen}}
        return [self.described(entry, defaults[entry.service] is entry) for entry in chosen]

    def described(self, entry: Entry, is_default: bool) -> Credential:
        remote: Mapping[str, Any] = {
            "path": entry.path,
            "version": entry.meta.version if entry.meta is not None else None,
            "fetched_at": None if entry.fetched_at is None else int(entry.fetched_at),
            "status": self.status(entry),
        }
        return replace(entry.credential(is_default=is_default), remote=remote)
