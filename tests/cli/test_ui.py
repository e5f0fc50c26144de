"""``vaultd ui``: the page's session, its URL, and a browser that never sees the token in argv.

A real ``vaultd serve`` (tests/support/served.py) and ``vaultd ui`` as a
process of its own, as a user runs it. The browser is ``$BROWSER``, which
Python's ``webbrowser`` runs first: here a script that writes down the
arguments it was started with, which every local user could read in /proc.
"""

from __future__ import annotations

import os
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import CLI
from tests.support.daemon import DaemonEnv, stop
from tests.support.http import bearer
from tests.support.served import Served, StartServer, served_openai
from vaultd.cli import browser
from vaultd.tokens import TOKEN_PREFIX, TOKEN_RE


@pytest.fixture
async def served(tmp_path: Path, aiohttp_server: StartServer) -> AsyncIterator[Served]:
    async with served_openai(tmp_path, aiohttp_server) as running:
        yield running


async def vaultd_ui(served: Served, *args: str, **env: str) -> tuple[int, str, str]:
    return await served.vaultd("ui", *args, env=env)


def token_of(url: str) -> str:
    fragment = urllib.parse.urlsplit(url).fragment
    assert fragment.startswith("token=")
    token = fragment.removeprefix("token=")
    assert TOKEN_RE.fullmatch(token)
    return token


async def test_print_url_mints_a_short_lived_read_admin_session(served: Served) -> None:
    before = time.time()
    code, out, err = await vaultd_ui(served, "--print-url")
    assert code == 0, err
    url = out.strip()
    assert url.startswith(f"{served.env.base_url}/ui/#token=")
    assert len(out.splitlines()) == 1
    token = token_of(url)
    assert token not in err and TOKEN_PREFIX not in err
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{served.env.base_url}/api/sessions", headers=bearer(token)) as r:
            assert r.status == 200
            (page,) = [s for s in await r.json() if s["key_prefix"] == token[:12]]
        # The page itself, at the printed address (the fragment is the browser's).
        async with client.get(url.partition("#")[0]) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
    assert page["name"] == "vaultd ui"
    assert page["scopes"] == ["read", "admin"]
    assert page["services"] == ["*"]
    assert before + 3600 - 5 <= page["expires_at"] <= time.time() + 3600 + 5
    assert page["id"] in err and "expires in 1 h" in err


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A ``$BROWSER`` that writes down its arguments and succeeds."""
    args = tmp_path / "browser-args"
    script = tmp_path / "browser"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\n')
    script.chmod(0o700)
    return script, args


@pytest.mark.parametrize("runtime", [True, False], ids=["XDG_RUNTIME_DIR", "data-dir"])
async def test_the_browser_gets_a_private_file_never_the_token(
    served: Served, tmp_path: Path, runtime: bool
) -> None:
    script, args = recorder(tmp_path)
    env = {"BROWSER": str(script)}
    if runtime:
        run_dir = tmp_path / "run"
        run_dir.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(run_dir)
        where = run_dir / "vaultd"
    else:
        where = served.db.parent / "ui"
    code, out, err = await vaultd_ui(served, **env)
    assert code == 0, err
    assert out == ""
    assert "opened the page in your browser" in err
    (argument,) = args.read_text().splitlines()
    # What any local user could read in /proc: a path, no token.
    assert TOKEN_PREFIX not in argument
    redirect = Path(urllib.parse.urlsplit(argument).path)
    assert argument == redirect.as_uri()
    assert redirect.parent == where
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert stat.S_IMODE(redirect.stat().st_mode) == 0o600
    page = redirect.read_text()
    # In the refresh and in a link to click should the refresh not happen.
    (token,) = set(TOKEN_RE.findall(page))
    assert f'content="0;url={served.env.base_url}/ui/#token={token}"' in page
    assert token not in err


async def test_a_browser_that_fails_leaves_no_file_and_prints_the_url(
    served: Served, tmp_path: Path
) -> None:
    script = tmp_path / "broken-browser"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o700)
    code, out, err = await vaultd_ui(served, BROWSER=str(script))
    assert code == 0, err
    token_of(out.strip())
    assert "no browser to open here" in err
    assert list((served.db.parent / "ui").glob("*")) == []


async def test_without_a_display_the_url_is_printed(served: Served) -> None:
    # served.env.vars has no DISPLAY, WAYLAND_DISPLAY nor BROWSER.
    code, out, err = await vaultd_ui(served)
    assert code == 0, err
    assert out.strip().startswith(f"{served.env.base_url}/ui/#token=")
    assert "no browser to open here; open this address yourself" in err


def test_a_daemon_that_does_not_serve_the_page_is_refused(tmp_path: Path) -> None:
    # The daemon's config turns the page off; the CLI's (another file) does not.
    env = DaemonEnv(tmp_path, "[ui]\nenabled = false\n")
    cli_config = tmp_path / "cli.toml"
    cli_config.write_text(f"[server]\nport = {env.port}\n")
    assert env.vaultd("init").returncode == 0
    daemon, log = env.start()
    try:
        env.wait_healthy(daemon, log)
        env.vars["VAULTD_CONFIG"] = str(cli_config)
        done = env.vaultd("ui", "--print-url")
    finally:
        assert stop(daemon) == 0, log.read_text()
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: the daemon at {env.base_url} does not serve the page: [ui] enabled = false"
        " in the config it runs with (reload it after changing that), or it is older than"
        " vaultd ui (restart it)"
    ]
    # Asked before anything was minted.
    done = env.vaultd("session", "list", "--all", "--json")
    assert done.stdout.strip() == "[]", done.stderr


def test_turned_off_in_the_config_is_one_line(initialised: CLI) -> None:
    config = initialised.home / ".config" / "vaultd" / "config.toml"
    config.write_text("[ui]\nenabled = false\n")
    line = initialised.fails("ui")
    assert line == f"Error: the page is turned off: [ui] enabled = false in {config}"


def test_no_daemon_is_one_line_and_mints_nothing(
    initialised: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTD_URL", "http://127.0.0.1:9")
    line = initialised.fails("ui", "--print-url")
    assert "not reachable" in line and "vaultd serve" in line
    with initialised.vault() as vault:
        assert vault.sessions.list() == []


def test_stale_redirect_files_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "ui"
    folder.mkdir(mode=0o700)
    old = browser.write_redirect(folder, "http://127.0.0.1:1/ui/#token=x")
    new = browser.write_redirect(folder, "http://127.0.0.1:1/ui/#token=y")
    os.utime(old, (time.time() - browser.STALE_AFTER - 10,) * 2)
    other = folder / "keep.txt"
    other.write_text("not ours")
    browser.remove_stale(folder)
    assert sorted(folder.iterdir()) == sorted([new, other])


def test_the_redirect_escapes_what_it_is_given(tmp_path: Path) -> None:
    folder = tmp_path / "ui"
    folder.mkdir(mode=0o700)
    page = browser.write_redirect(folder, 'http://127.0.0.1:1/ui/#token=a"><script>x</script>')
    text = page.read_text()
    assert "<script>" not in text and "&quot;&gt;&lt;script&gt;" in text
