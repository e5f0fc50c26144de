"""The proxy's cache on its own: what it keeps, and that a change in the database ends it."""

from __future__ import annotations

import sqlite3

import pytest

from vaultd.core.vault import Vault, open_vault
from vaultd.errors import Unauthorized
from vaultd.proxy import cache as cache_module
from vaultd.proxy.arrivals import ARRIVALS
from vaultd.proxy.cache import ProxyCache

KEY = "sk-proj-CACHEDkeyCACHEDkey0001"


@pytest.fixture
def stocked(opened_vault: Vault) -> tuple[Vault, str]:
    dek = opened_vault.unlock()
    opened_vault.credentials.add(dek, service="openai", name="main", secret=KEY)
    opened_vault.credentials.add(dek, service="github", name="gh", secret="ghp_" + "1" * 36)
    _session, token = opened_vault.sessions.create(
        name="t",
        scopes=["proxy"],
        services=["*"],
        ttl=3600,
        known_services=opened_vault.config.services,
    )
    return opened_vault, token


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_session_is_looked_up_once_while_nothing_changes(
    stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, token = stocked
    cache = ProxyCache(vault)
    calls = count_calls(monkeypatch, vault.sessions, "authenticate")
    for _ in range(5):
        cache.refresh()
        assert cache.session(token).name == "t"
    assert len(calls) == 1


def test_a_revocation_by_another_process_ends_the_cached_session(
    stocked: tuple[Vault, str],
) -> None:
    vault, token = stocked
    cache = ProxyCache(vault)
    cache.refresh()
    session = cache.session(token)
    assert cache.refresh() is False
    with open_vault(vault.config) as other:  # the CLI's own connection
        other.sessions.revoke(session.id)
    assert cache.refresh() is True
    with pytest.raises(Unauthorized, match="revoked"):
        cache.session(token)


def test_a_cached_session_still_expires_on_time(
    stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, token = stocked
    cache = ProxyCache(vault)
    cache.session(token)
    later = cache.session(token).expires_at
    assert later is not None
    monkeypatch.setattr("vaultd.core.sessions.now", lambda: later + 1)
    with pytest.raises(Unauthorized, match="expired"):
        cache.session(token)


def test_credentials_by_default_name_or_id_of_their_own_service(
    stocked: tuple[Vault, str],
) -> None:
    vault, _ = stocked
    cache = ProxyCache(vault)
    main = cache.credential("openai", None)
    assert main is not None and main.name == "main"
    assert cache.credential("openai", "main") == main
    assert cache.credential("openai", main.id) == main
    assert cache.credential("github", main.id) is None  # another service's key
    assert cache.credential("openai", "nope") is None


def test_a_secret_is_opened_once_with_its_redaction_patterns(
    stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, _ = stocked
    cache = ProxyCache(vault)
    service = vault.config.services["openai"]
    credential = cache.credential("openai", None)
    assert credential is not None
    calls = count_calls(monkeypatch, vault.credentials, "reveal")
    first = cache.secret(credential, service)
    assert cache.secret(credential, service) is first
    assert first.value == KEY and len(calls) == 1
    assert first.patterns.found_in(b'{"echo": "' + KEY.encode() + b'"}')


def test_the_cache_is_bounded(stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch) -> None:
    vault, token = stocked
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 2)
    cache = ProxyCache(vault)
    cache.refresh()
    cache.session(token)
    cache.credential("openai", None)
    cache.credential("github", None)
    assert len(cache) == 3
    assert cache.refresh() is True  # over the bound: emptied although nothing changed
    assert len(cache) == 0


def test_rewarm_refills_what_a_usage_write_emptied(
    stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, token = stocked
    cache = ProxyCache(vault)
    cache.refresh()
    cache.session(token)
    credential = cache.credential("openai", None)
    assert credential is not None
    cache.secret(credential, vault.config.services["openai"])
    with sqlite3.connect(vault.config.db_path) as conn:  # what the usage writer does
        conn.execute("UPDATE credentials SET use_count = use_count + 1")
    cache.rewarm()
    assert len(cache) == 3
    authenticate = count_calls(monkeypatch, vault.sessions, "authenticate")
    reveal = count_calls(monkeypatch, vault.credentials, "reveal")
    cache.refresh()
    cache.session(token)
    cache.secret(credential, vault.config.services["openai"])
    assert (authenticate, reveal) == ([], [])


class _FailingCheck:
    """Stands in for the cache's PRAGMA cursor: the database cannot be read (busy, I/O)."""

    def execute(self, sql: str) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("disk I/O error")


def test_a_check_that_failed_vouches_for_no_request(
    stocked: tuple[Vault, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request sent after a revocation, whose check failed, is checked again when
    the database can be read, not served from the cache by the next request."""
    vault, token = stocked
    cache = ProxyCache(vault)
    cache.refresh()
    session = cache.session(token)
    with open_vault(vault.config) as other:  # the CLI revokes it
        other.sessions.revoke(session.id)
    arrival = ARRIVALS.tick()  # then a request with the token arrives
    working = cache._version
    monkeypatch.setattr(cache, "_version", _FailingCheck())
    with pytest.raises(sqlite3.OperationalError):  # its check fails (a 503)
        cache.refresh_for(arrival)
    monkeypatch.setattr(cache, "_version", working)
    cache.refresh_for(arrival)  # as another request that arrived with it
    with pytest.raises(Unauthorized, match="revoked"):
        cache.session(token)
