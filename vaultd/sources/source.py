"""Reading one source into the catalog: rounds every ``refresh_interval``, and one
read at a time per path.

A round logs in (or renews), lists ``<prefix>/`` and each service's folder,
reads every listed credential and forgets those no longer listed. A request
that finds a secret not fresh (``catalog.Pending``) joins the read of that
path already under way, or starts it: fifty requests at once cost the
server one read. While the server is down the rounds back off (doubling,
with jitter, up to a minute) and no request waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from vaultd.sourceconfig import SourceSettings
from vaultd.sources.auth import Auth, AuthFailed
from vaultd.sources.catalog import (
    DELETED,
    INVALID,
    UNAUTHORIZED,
    UNREACHABLE,
    Catalog,
    Entry,
    Pending,
)
from vaultd.sources.client import Answer, SourceClient, SourceDown, TooLarge
from vaultd.sources.errors import SourceSecretInvalid, SourceUnavailable
from vaultd.sources.kv import data_path, list_path, parse_listing, parse_secret, printable

log = logging.getLogger("vaultd.sources")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# Reads of one round at once: a team's keys are tens; the server is shared.
ROUND_READS = 4
# How long a request waits for a read (or a first listing) before it is refused.
WAIT_LIMIT = 20.0


class Source:
    def __init__(
        self,
        settings: SourceSettings,
        catalog: Catalog,
        services: Callable[[], Mapping[str, object]],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.state = catalog.sources[settings.name]
        # The services the daemon knows now (a reload may add one).
        self._services = services
        self.client = SourceClient(settings)
        self.auth = Auth(settings, self.client)
        self._reads: dict[str, asyncio.Task[None]] = {}
        self._listed = asyncio.Event()
        self._failures = 0
        # Why a read of the current round found the server down (the round failed).
        self._read_down: str | None = None
        self._warned: set[str] = set()
        self.rounds = 0

    # -- what a request waits for -------------------------------------------

    async def settle(self, pending: Pending) -> None:
        """Wait for what ``pending`` asked for: the first listing, or one read."""
        try:
            async with asyncio.timeout(WAIT_LIMIT):
                if pending.entry_id is None:
                    await self._listed.wait()
                    return
                entry = self.catalog.get(pending.entry_id)
                if entry is not None:
                    await self.read(entry)
        except TimeoutError:
            raise SourceUnavailable(
                f"source {self.settings.name} did not answer within {WAIT_LIMIT:.0f}s"
            ) from None

    def read(self, entry: Entry) -> Awaitable[None]:
        """The read of ``entry`` under way, or a new one: never two at once per path."""
        task = self._reads.get(entry.id)
        if task is None:
            task = asyncio.ensure_future(self._read(entry))
            self._reads[entry.id] = task
            task.add_done_callback(functools.partial(self._read_done, entry.id))
        # Shielded: a request that gives up must not cancel the read others wait on.
        return asyncio.shield(task)

    def _read_done(self, entry_id: str, _task: asyncio.Task[None]) -> None:
        self._reads.pop(entry_id, None)

    # -- rounds ---------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until cancelled."""
        while True:
            delay = await self.round()
            await asyncio.sleep(delay)

    async def round(self) -> float:
        """One round; the seconds until the next."""
        self.rounds += 1
        try:
            await self._list_and_read()
        except SourceDown as exc:
            return self._down(str(exc))
        except AuthFailed as exc:
            self._refused(str(exc))
        except Exception as exc:  # the rounds must outlive any answer
            # Whatever a hostile or broken server makes of an answer, the rounds
            # go on: this round failed, and the log names only the kind.
            return self._down(f"the source's answer could not be used ({exc.__class__.__name__})")
        else:
            self._failures = 0
            self.state.down = False
            self.state.status, self.state.error = "ok", None
        finally:
            self.state.listed = True
            self._listed.set()
        # A little early (so a secret in use is read again before it is stale)
        # and spread, so that many daemons do not read in step.
        delay = self.settings.refresh_interval * random.uniform(0.8, 0.9)  # noqa: S311
        renew = self.auth.renew_in()
        return max(1.0, min(delay, renew)) if renew is not None else delay

    def _down(self, error: str) -> float:
        self._failures += 1
        delay = min(
            BACKOFF_MAX, float(self.settings.refresh_interval), BACKOFF_FIRST * 2.0**self._failures
        )
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
        # Down until a round succeeds: no request waits on the server meanwhile.
        self.state.down = True
        self.state.status, self.state.error = UNREACHABLE, error
        for entry in self.catalog.entries(self.settings.name):
            if entry.status not in (UNAUTHORIZED, DELETED, INVALID):
                entry.failed(UNREACHABLE, error)
        log.warning("source %s: %s; trying again in %.0fs", self.settings.name, error, delay)
        return delay

    def _refused(self, error: str) -> None:
        """The source refused vaultd: every secret of it is dropped now."""
        self.state.status, self.state.error = UNAUTHORIZED, error
        self.state.down = False
        for entry in self.catalog.entries(self.settings.name):
            entry.failed(UNAUTHORIZED, error)
        log.warning("source %s: %s; its credentials are dropped", self.settings.name, error)

    async def _call(self, method: str, path: str) -> Answer:
        """``method path`` with the token. A 403 may mean a revoked or expired
        token: the call is made again if ``Auth.relogin`` got a new one."""
        token = await self.auth.token()
        answer = await self.client.call(method, path, token=token)
        if answer.status == 403:
            fresh = await self.auth.relogin(token)
            if fresh is not None:
                answer = await self.client.call(method, path, token=fresh)
        if answer.status == 429 or answer.status >= 500:
            raise SourceDown(
                f"the source answered {answer.status} (sealed, rate-limited or failing)"
            )
        return answer

    async def list_folder(self, service: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        where = list_path(self.settings, service)
        # GET ?list=true rather than the LIST verb: the same to the server (and its
        # audit), and a method every HTTP stack in between knows.
        answer = await self._call("GET", where + "?list=true")
        if answer.status == 404:  # an empty folder
            return (), ()
        if answer.status == 403:
            raise AuthFailed("the source refused to list " + where.split("/metadata/", 1)[1])
        if answer.status != 200:
            raise SourceDown(f"the source answered {answer.status} to a listing")
        try:
            listing = parse_listing(answer.body)
        except SourceUnavailable as exc:
            raise SourceDown(str(exc)) from None
        if listing.refused:
            self._warn_once(
                f"source {self.settings.name}: skipped keys under {where} that are not a "
                f"plain name (never requested): {', '.join(listing.refused[:5])}"
            )
        return listing.folders, listing.entries

    async def _list_and_read(self) -> None:
        name = self.settings.name
        self._read_down = None
        folders, _ = await self.list_folder(None)
        known = self._services()
        listed: list[Entry] = []
        refused: set[str] = set()
        for service in folders:
            if service not in known:
                self._warn_once(
                    f"source {name}: {self.settings.prefix}/{service}/ is not a service "
                    "vaultd knows; add [services." + service + "] to use it"
                )
                continue
            try:
                _, names = await self.list_folder(service)
            except AuthFailed as exc:
                # A policy may leave one service's folder out: that service's
                # secrets are refused, the others' still read.
                names = tuple(e.name for e in self.catalog.entries(name) if e.service == service)
                for entry in (self.catalog.entry(name, service, n) for n in names):
                    entry.failed(UNAUTHORIZED, str(exc))
                    listed.append(entry)
                    refused.add(entry.id)
                continue
            listed.extend(self.catalog.entry(name, service, n) for n in names)
        limit = asyncio.Semaphore(ROUND_READS)

        async def one(entry: Entry) -> None:
            async with limit:
                await self.read(entry)

        await asyncio.gather(*(one(e) for e in listed if e.id not in refused))
        self.catalog.forget(name, {entry.id for entry in listed})
        if self._read_down is not None:
            raise SourceDown(self._read_down)

    async def _read(self, entry: Entry) -> None:
        path = data_path(self.settings, entry.service, entry.name)
        # A drop while this read is on its way (a round found it deleted) wins.
        generation = entry.generation
        try:
            answer = await self._call("GET", path)
            self._answered(entry, answer, generation)
        except TooLarge as exc:
            entry.failed(INVALID, str(exc))
        except SourceDown as exc:
            entry.failed(UNREACHABLE, str(exc))
            self._read_down = str(exc)
            # Until a round succeeds, the requests behind this one are served
            # the last good value, or refused, without waiting.
            self.state.down = True
        except AuthFailed as exc:
            entry.failed(UNAUTHORIZED, str(exc))
        except Exception as exc:  # a request must get a 503, never a 500
            entry.failed(
                INVALID, f"the source's answer could not be used ({exc.__class__.__name__})"
            )

    def _answered(self, entry: Entry, answer: Answer, generation: int) -> None:
        if answer.status == 403:
            entry.failed(UNAUTHORIZED, "the source refused vaultd's token for it (403)")
        elif answer.status == 404:
            entry.failed(DELETED, "it was deleted at the source (404)")
        elif answer.status != 200:
            entry.failed(UNREACHABLE, f"the source answered {answer.status}")
        else:
            try:
                value, meta = parse_secret(answer.body)
            except SourceSecretInvalid as exc:
                entry.failed(INVALID, str(exc))
                self._warn_once(f"source {self.settings.name}: {entry.path}: {exc}")
                return
            if entry.meta is not None and entry.meta.version != meta.version:
                log.info(
                    "source %s: %s is now version %d", self.settings.name, entry.path, meta.version
                )
            entry.stored(value, meta, time.time(), generation)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned and len(self._warned) < 100:
            self._warned.add(message)
            log.warning("%s", printable(message))

    async def close(self) -> None:
        for task in list(self._reads.values()):
            task.cancel()
        await self.client.close()


class Sources:
    """Every configured source, their catalog, and their rounds' tasks."""

    def __init__(
        self, settings: Mapping[str, SourceSettings], services: Callable[[], Mapping[str, Any]]
    ) -> None:
        self.catalog = Catalog(list(settings.values()))
        self.by_name = {name: Source(s, self.catalog, services) for name, s in settings.items()}
        self._tasks: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def start(self) -> None:
        for name, source in self.by_name.items():
            self._tasks.append(asyncio.create_task(source.run(), name=f"vaultd-source-{name}"))

    async def settle(self, pending: Pending) -> None:
        await self.by_name[pending.source].settle(pending)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for source in self.by_name.values():
            await source.close()


# Where the app keeps them (set by the daemon at start, read by the proxy and the API).
SOURCES = web.AppKey("sources", Sources)
