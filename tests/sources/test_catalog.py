"""When a remote secret is served, waited for, served stale or refused (DESIGN 13).

The catalog decides alone, from the time and the outcome of the last read;
these tests drive it by hand, clock and all.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vaultd.sourceconfig import SourceSettings
from vaultd.sources.catalog import DELETED, INVALID, UNAUTHORIZED, UNREACHABLE, Catalog, Pending
from vaultd.sources.errors import (
    CredentialDeleted,
    SourceSecretInvalid,
    SourceUnauthorized,
    SourceUnavailable,
)
from vaultd.sources.kv import RemoteMeta

SECRET = "sk-team-0123456789abcdefghij"


def _settings(name: str = "team") -> SourceSettings:
    return SourceSettings(
        name=name,
        type="openbao",
        url="http://127.0.0.1:8200",
        mount="secret",
        prefix="vaultd",
        auth="token_file",
        token_file=Path("/nonexistent"),
        refresh_interval=60,
        max_stale=600,
    )


def _meta(version: int = 1, default: bool = False) -> RemoteMeta:
    return RemoteMeta(version, "api_key", {}, None, None, default, None)


def _stored(catalog: Catalog, at: float, name: str = "primary", source: str = "team") -> str:
    entry = catalog.entry(source, "openai", name)
    entry.stored(SECRET, _meta(), at, entry.generation)
    catalog.sources[source].listed = True
    return entry.id


def test_a_fresh_secret_is_served_without_waiting() -> None:
    catalog = Catalog([_settings()])
    cid = _stored(catalog, 1000.0)
    assert catalog.secret(cid, wait=True, now=1059.0) == SECRET


def test_an_older_secret_waits_for_one_read_when_the_server_may_answer() -> None:
    catalog = Catalog([_settings()])
    cid = _stored(catalog, 1000.0)
    with pytest.raises(Pending) as pending:
        catalog.secret(cid, wait=True, now=1061.0)
    assert pending.value.entry_id == cid
    # Asked again after the read (which failed): the last good value, until max_stale.
    catalog.get(cid).failed(UNREACHABLE, "the source could not be reached")  # type: ignore[union-attr]
    assert catalog.secret(cid, wait=False, now=1599.0) == SECRET
    assert catalog.status(catalog.get(cid), now=1599.0) == "stale"  # type: ignore[arg-type]
    with pytest.raises(SourceUnavailable, match="more than max_stale"):
        catalog.secret(cid, wait=False, now=1601.0)
    assert catalog.status(catalog.get(cid), now=1601.0) == "unreachable"  # type: ignore[arg-type]


def test_no_request_waits_on_a_server_known_to_be_down() -> None:
    catalog = Catalog([_settings()])
    cid = _stored(catalog, 1000.0)
    catalog.sources["team"].down = True
    assert catalog.secret(cid, wait=True, now=1100.0) == SECRET


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (UNAUTHORIZED, SourceUnauthorized),
        (DELETED, CredentialDeleted),
        (INVALID, SourceSecretInvalid),
    ],
)
def test_a_refusal_drops_the_secret_at_once(status: str, error: type[Exception]) -> None:
    catalog = Catalog([_settings()])
    cid = _stored(catalog, 1000.0)
    entry = catalog.get(cid)
    assert entry is not None
    entry.failed(status, "why")
    assert entry.value is None
    with pytest.raises(error):
        catalog.secret(cid, wait=True, now=1001.0)
    assert catalog.status(entry) == status
    # The listing has no hint left to show either.
    assert catalog.listing()[0].hint is None


def test_a_secret_never_read_waits_then_is_unavailable() -> None:
    catalog = Catalog([_settings()])
    entry = catalog.entry("team", "openai", "primary")
    with pytest.raises(Pending):
        catalog.secret(entry.id, wait=True)
    entry.failed(UNREACHABLE, "the source could not be reached (ClientConnectorError)")
    with pytest.raises(SourceUnavailable, match="could not be read"):
        catalog.secret(entry.id, wait=False)


def test_lookups_wait_for_a_first_listing_only() -> None:
    catalog = Catalog([_settings()])
    with pytest.raises(Pending) as pending:
        catalog.find("openai", None, wait=True)
    assert pending.value.entry_id is None
    catalog.sources["team"].listed = True
    assert catalog.find("openai", None, wait=True) is None


def test_the_default_is_the_marked_one_else_the_only_one() -> None:
    catalog = Catalog([_settings()])
    first = _stored(catalog, 1000.0, "a")
    found = catalog.find("openai", None, wait=False)
    assert found is not None and found.id == first and found.is_default
    second = catalog.entry("team", "openai", "b")
    second.stored(SECRET, _meta(), 1000.0, second.generation)
    assert catalog.find("openai", None, wait=False) is None  # two, none marked
    second.stored(SECRET, _meta(default=True), 1000.0, second.generation)
    chosen = catalog.find("openai", None, wait=False)
    assert chosen is not None and chosen.name == "b"
    by_id = catalog.find("openai", first, wait=False)
    assert by_id is not None and by_id.name == "a" and not by_id.is_default
    assert catalog.find("anthropic", first, wait=False) is None  # another service's id


def test_a_name_two_sources_share_is_the_first_sources() -> None:
    catalog = Catalog([_settings("first"), _settings("second")])
    _stored(catalog, 1000.0, source="second")
    _stored(catalog, 1000.0, source="first")
    found = catalog.find("openai", "primary", wait=False)
    assert found is not None and found.source == "first"


def test_forgetting_what_is_no_longer_listed() -> None:
    catalog = Catalog([_settings()])
    keep = _stored(catalog, 1000.0, "a")
    gone = _stored(catalog, 1000.0, "b")
    catalog.forget("team", {keep}, now=2000.0)
    # Deleted at once: a request hears so, and the listing says so ...
    with pytest.raises(CredentialDeleted, match="no longer listed"):
        catalog.secret(gone, wait=True)
    entry = catalog.get(gone)
    assert entry is not None and catalog.status(entry) == "deleted" and entry.value is None
    # ... until max_stale (600 s) later, when it is forgotten.
    catalog.forget("team", {keep}, now=2599.0)
    assert catalog.get(gone) is not None
    catalog.forget("team", {keep}, now=2600.0)
    assert catalog.get(gone) is None
    assert catalog.find("openai", "b", wait=False) is None
    with pytest.raises(CredentialDeleted):
        catalog.secret(gone, wait=True)


def test_the_listing_shows_state_never_the_secret() -> None:
    catalog = Catalog([_settings()])
    cid = _stored(catalog, time.time())
    (item,) = catalog.listing()
    shape = item.to_json()
    assert shape["id"] == cid and shape["source"] == "team"
    assert shape["remote"]["path"] == "vaultd/openai/primary"
    assert shape["remote"]["status"] == "ok" and shape["remote"]["version"] == 1
    assert shape["hint"] == "sk-...ghij"
    assert SECRET not in repr(shape) and SECRET not in repr(catalog.get(cid))
