"""``vaultd ui``: the daemon's page (DESIGN 15), opened in a browser and logged in.

The page has no password and sets no cookie: this verb mints it a short-lived
session (scopes read and admin, ``[ui] session_ttl``) in the vault directly,
as ``run`` does, and hands it over in the URL's fragment, which browsers
never send to a server. The page moves it to ``sessionStorage``.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import click

from vaultd.cli.common import State, one_line_errors, opened, pass_state
from vaultd.core.sessions import ALL_SERVICES
from vaultd.errors import VaultdError
from vaultd.models import now
from vaultd.units import format_ago

SESSION_NAME = "vaultd ui"
SCOPES = ["read", "admin"]


@click.command(name="ui")
@click.option(
    "--print-url",
    is_flag=True,
    help="Print the page's address (it holds the session's token) instead of opening a browser.",
)
@pass_state
@one_line_errors
def ui(state: State, print_url: bool) -> None:
    """Open the daemon's page (spend over time, keys, sessions, audit log) in a browser.

    Mints a session for the page (scopes read and admin, lasting [ui]
    session_ttl, 1h by default) and opens http://127.0.0.1:3978/ui/ with its
    token in the address's fragment. Without a browser to open (no display),
    or with --print-url, the address is printed instead: open it yourself,
    and keep it to yourself until the session ends. When it has, run vaultd
    ui again. Needs the daemon (VAULTD_URL, else [server] host and port).
    """
    from vaultd.cli import browser, child

    config = state.config
    if not config.ui_enabled:
        where = config.config_file or "the config"
        raise click.ClickException(f"the page is turned off: [ui] enabled = false in {where}")
    url = child.daemon_url(os.environ, config)
    child.check_daemon(url)
    _check_page(url)
    with opened(state) as vault:
        created, token = vault.sessions.create(
            name=SESSION_NAME,
            scopes=SCOPES,
            services=[ALL_SERVICES],
            ttl=config.ui_session_ttl,
            known_services=config.services,
        )
        try:
            # The daemon must know the token: one serving another vault would not.
            child.daemon_view(url, token)
        except BaseException:
            vault.sessions.revoke(created.id)
            raise
    page = f"{url}/ui/#token={token}"
    lifetime = _lifetime(created.id, created.expires_at)
    found = None if print_url else browser.graphical_browser(os.environ)
    if found is not None and browser.open_page(
        page, browser.redirect_dir(os.environ, config.data_dir), found
    ):
        click.echo(f"vaultd ui: opened the page in your browser; {lifetime}", err=True)
        return
    if not print_url:
        click.echo("vaultd ui: no browser to open here; open this address yourself:", err=True)
    click.echo(page)
    click.echo(f"vaultd ui: {lifetime}; the address holds its token: keep it to yourself", err=True)


def _lifetime(session_id: str, expires_at: int | None) -> str:
    until = format_ago(expires_at, now())
    return f"session {session_id} expires {until} (vaultd session revoke {session_id} ends it)"


def _check_page(url: str, timeout: float = 3.0) -> None:
    """Refuse (``VaultdError``) a daemon that does not serve ``/ui/`` (its config
    turns the page off: the file may have changed since it read it)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/ui/", timeout=timeout):  # url passed check_daemon
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise VaultdError(
                f"the daemon at {url} does not serve the page: [ui] enabled = false in the "
                "config it runs with (reload it after changing that), or it is older than "
                "vaultd ui (restart it)"
            ) from None
        raise VaultdError(f"the daemon at {url} answered {exc.code} to GET /ui/") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VaultdError(f"the daemon at {url} did not answer GET /ui/ ({reason})") from None
