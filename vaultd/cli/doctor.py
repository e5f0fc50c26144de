"""``vaultd doctor``: one line per check, and whether any of them failed.

Levels: ``ok``, ``FAIL`` (the vault is unusable or unsafe: exit 1), ``warn``
(worth knowing, but the vault itself is fine: a daemon that is not running
is a normal state for the CLI, so it is a warning, not a failure) and
``info``. No line ever holds a secret: credentials are counted, not shown.
Never imports aiohttp (it runs when the daemon cannot start).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vaultd.config import Config, config_digest, config_home, load_config
from vaultd.core.vault import PASSPHRASE_MODE, Vault
from vaultd.errors import VaultdError
from vaultd.fsperms import unsafe_reason
from vaultd.models import Credential, now
from vaultd.store.db import connect, latest_migration, migrations
from vaultd.units import format_ago


@dataclass(frozen=True)
class Check:
    level: str  # "ok", "FAIL", "warn" or "info"
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def _mode(path: Path, kind: str) -> tuple[bool, str]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False, f"{kind} {path} is missing"
    # The same judgement every verb makes at start (fsperms), as a line.
    problem = unsafe_reason(kind, path, st)
    if problem:
        return False, problem
    return True, f"{kind} {stat.S_IMODE(st.st_mode):o}"


def _kek_mode(db_path: Path) -> bytes | None:
    """The vault's kek_mode, read without writing (None if unreadable)."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'kek_mode'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if row is None else bytes(row[0])


def _permissions(config: Config, passphrase_mode: bool) -> Check:
    results = [
        _mode(config.data_dir, "data dir"),
        _mode(config.db_path, "database"),
    ]
    if not passphrase_mode:
        results.append(_mode(config.key_file, "key file"))
    bad = [text for good, text in results if not good]
    if bad:
        return Check("FAIL", "permissions", "; ".join(bad))
    return Check("ok", "permissions", ", ".join(text for _, text in results))


def _vault_checks(config: Config, passphrase_file: Path | None) -> Iterator[Check]:
    try:
        db = connect(config.db_path)
    except VaultdError as exc:
        yield Check("FAIL", "database", str(exc))
        return
    vault = Vault(config, db, passphrase_file=passphrase_file)
    try:
        result = [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
        if result == ["ok"]:
            yield Check("ok", "integrity", "PRAGMA integrity_check: ok")
        else:
            yield Check("FAIL", "integrity", "; ".join(result[:3]))
        applied = [m.name for m in migrations.applied(db)]
        latest = latest_migration()
        if applied and applied[-1] == latest and not migrations.pending(db):
            yield Check("ok", "schema", f"{latest} ({len(applied)} migrations)")
        else:
            yield Check("FAIL", "schema", f"expected {latest}, database has {applied or 'none'}")
        try:
            dek = vault.unlock()
        except VaultdError as exc:
            yield Check("FAIL", "key", str(exc))
            return
        opener = "the passphrase" if vault.passphrase_mode else str(config.key_file)
        yield Check("ok", "key", f"{opener} opens the vault")
        credentials = vault.credentials.list()
        broken = []
        for credential in credentials:
            try:
                vault.credentials.reveal(dek, credential)
            except VaultdError:
                broken.append(f"{credential.service}/{credential.name} ({credential.id})")
        if broken:
            yield Check(
                "FAIL",
                "credentials",
                f"{len(broken)} of {len(credentials)} do not open: {', '.join(broken[:5])}",
            )
        else:
            yield Check("ok", "credentials", f"all {len(credentials)} open")
        yield from _expiry(credentials)
    except VaultdError as exc:
        yield Check("FAIL", "database", str(exc))
    except sqlite3.DatabaseError as exc:
        # A damaged page can pass the open and fail any later read: still a
        # line, since a damaged vault is exactly when doctor is run.
        yield Check("FAIL", "database", f"{config.db_path} is damaged ({exc}); restore a backup")
    finally:
        vault.close()


def _expiry(credentials: Iterable[Credential]) -> Iterator[Check]:
    """A ``warn`` line for each credential that has expired or expires within 14 days."""
    at = now()
    for credential in credentials:
        if credential.expires_at is None:
            continue
        label = f"{credential.service}/{credential.name} ({credential.id})"
        when = format_ago(credential.expires_at, at)
        if credential.expired(at):
            yield Check("warn", "expiry", f"{label} EXPIRED {when}: rotate it (vaultd rotate)")
        elif credential.expires_soon(at):
            yield Check("warn", "expiry", f"{label} expires {when}: rotate it (vaultd rotate)")


def _daemon(env: Mapping[str, str], config: Config) -> Iterator[Check]:
    from vaultd.cli.child import check_daemon, daemon_url
    from vaultd.cli.listener import ListenerNotOurs

    try:
        url = daemon_url(env, config)
        version = check_daemon(url, timeout=2.0)
    except ListenerNotOurs as exc:
        # Not a daemon that is down: someone else holds its port.
        yield Check("FAIL", "daemon", str(exc))
        return
    except VaultdError as exc:
        yield Check("warn", "daemon", str(exc))
        return
    yield Check("ok", "daemon", f"vaultd {version} at {url}")
    yield _daemon_config(url, config)


def _daemon_config(url: str, config: Config) -> Check:
    """Whether the daemon runs with the config the file holds now (by digest).

    The daemon says only to a ``read`` token: one is made for a minute in the
    vault and revoked at once (the daemon prunes it later, with the others).
    """
    from vaultd.cli.child import RELOAD_HINT, daemon_view, read_token

    name = "daemon config"
    where = str(config.config_file or "the defaults (no config file)")
    try:
        db = connect(config.db_path)
    except VaultdError:
        return Check("info", name, "not compared: no vault to make a token in")
    try:
        with read_token(db, config.services, "vaultd doctor") as token:
            view = daemon_view(url, token, timeout=2.0)
    except (VaultdError, sqlite3.Error) as exc:
        return Check("warn", name, f"not compared: {exc}")
    finally:
        db.close()
    if view is None or view.config_digest is None:
        return Check("info", name, "not compared: the daemon is too old to tell")
    if view.config_digest == config_digest(config):
        return Check("ok", name, f"the daemon runs with {where}")
    if view.pending_restart:
        return Check(
            "warn",
            name,
            f"{where} changed {', '.join(view.pending_restart)}, which only a restart of "
            "the daemon applies (systemctl --user restart vaultd)",
        )
    return Check(
        "warn", name, f"the daemon runs with an older version of {where}: reload it ({RELOAD_HINT})"
    )


def _sources(config: Config) -> Iterator[Check]:
    """Each [sources.NAME]: reachable, logged in, how many credentials, the token's TTL."""
    if not config.sources:
        return
    from vaultd.sources.probe import probe_sources

    local = _local_names(config)
    for name, (level, message, listed) in probe_sources(config.sources, config.services).items():
        yield Check(level, f"source {name}", message)
        hidden = sorted(f"{service}/{item}" for service, item in listed & local)
        if hidden:
            # The proxy asks the vault first: the team's key is never sent for these.
            yield Check(
                "warn",
                f"source {name}",
                f"the vault's own {', '.join(hidden[:5])} hide{'s' if len(hidden) == 1 else ''} "
                "the source's credential of that name (vaultd rm it to use the team's)",
            )


def _local_names(config: Config) -> frozenset[tuple[str, str]]:
    """(service, name) of every credential in the vault (none if it cannot be read)."""
    try:
        db = connect(config.db_path)
    except VaultdError:
        return frozenset()
    try:
        rows = db.execute("SELECT service, name FROM credentials").fetchall()
    except sqlite3.Error:
        return frozenset()
    finally:
        db.close()
    return frozenset((str(service), str(name)) for service, name in rows)


def _unit(env: Mapping[str, str]) -> Check:
    unit = config_home(env).parent / "systemd" / "user" / "vaultd.service"
    if unit.exists():
        return Check("info", "systemd", f"user unit {unit} is installed")
    return Check(
        "info", "systemd", f"no user unit at {unit} (vaultd systemd-unit > {unit} makes one)"
    )


def _isolation() -> Iterator[Check]:
    """Whether `vaultd run --isolate` (and its --net proxy-only) can confine here."""
    from vaultd.isolation.check import problems

    for net, name in (("all", "isolate"), ("proxy-only", "isolate --net proxy-only")):
        missing = problems(net)
        if missing:
            yield Check("warn", name, "not available here: " + "; ".join(missing))
        else:
            yield Check("ok", name, "available (bubblewrap and Landlock)")


def run_checks(
    config_path: str | None,
    data_dir: str | None,
    env: Mapping[str, str] | None = None,
    *,
    passphrase_file: Path | None = None,
) -> list[Check]:
    env = os.environ if env is None else env
    checks: list[Check] = []
    try:
        config = load_config(config_path, data_dir)
    except VaultdError as exc:
        return [Check("FAIL", "config", str(exc))]
    checks.append(Check("ok", "config", "parses"))
    passphrase_mode = _kek_mode(config.db_path) == PASSPHRASE_MODE
    checks.append(_permissions(config, passphrase_mode))
    if config.db_path.exists():
        checks.extend(_vault_checks(config, passphrase_file))
    else:
        checks.append(Check("FAIL", "database", f"no vault at {config.db_path}; run: vaultd init"))
    checks.extend(_daemon(env, config))
    checks.extend(_sources(config))
    checks.append(_unit(env))
    checks.extend(_isolation())
    return checks
