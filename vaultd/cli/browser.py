"""Handing the page's URL to a browser without putting its token in a command line.

``webbrowser.open(url)`` starts a process (``xdg-open URL``, ``firefox URL``)
whose arguments every local user can read in ``/proc`` (threat T2); a browser
that was not running yet keeps them for as long as it runs. The URL of
``vaultd ui`` holds an admin token, so the browser is given a file instead:
a 0600 page in a 0700 directory of the user's that sends it on to the URL
(as Jupyter does). Only the file's path is in any command line. The file is
removed by the next ``vaultd ui`` once it is a few minutes old; its token
lives for ``[ui] session_ttl``.

A browser confined by a snap or a flatpak may not be allowed to read the
file; ``vaultd ui --print-url`` is the way round that.
"""

from __future__ import annotations

import html
import os
import secrets
import sys
import time
import webbrowser
from collections.abc import Mapping
from pathlib import Path

from vaultd.fsperms import create_private_file, ensure_private_dir

# A redirect file older than this has been read by the browser it was for.
STALE_AFTER = 300
_PREFIX = "ui-login-"
_REDIRECT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url={url}">
<title>vaultd</title></head>
<body><p>Opening <a href="{url}">vaultd's page</a>&hellip;</p></body></html>
"""


def graphical_browser(env: Mapping[str, str]) -> webbrowser.BaseBrowser | None:
    """The browser ``webbrowser`` would start, if one can show the page.

    On Linux and the BSDs, without a display (``DISPLAY``, ``WAYLAND_DISPLAY``)
    the only ones left are text browsers in this very terminal, which cannot
    run the page's script: then there is none, unless ``BROWSER`` names one.
    """
    desktop = sys.platform in ("darwin", "win32") or sys.platform.startswith("cygwin")
    if not (desktop or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("BROWSER")):
        return None
    try:
        return webbrowser.get()
    except webbrowser.Error:
        return None


def redirect_dir(env: Mapping[str, str], data_dir: Path) -> Path:
    """Where redirect files go: ``$XDG_RUNTIME_DIR/vaultd`` (a tmpfs of the user's,
    emptied at logout), else the vault's own data directory. ``vaultd run
    --isolate`` hides both from its command."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) / "vaultd" if os.path.isabs(runtime) and os.path.isdir(runtime) else None
    folder = base or data_dir / "ui"
    ensure_private_dir(folder, "directory")
    return folder


def remove_stale(folder: Path, now: float | None = None) -> None:
    """Remove the redirect files older than ``STALE_AFTER`` seconds."""
    at = time.time() if now is None else now
    for path in folder.glob(_PREFIX + "*.html"):
        try:
            if at - path.lstat().st_mtime > STALE_AFTER:
                path.unlink()
        except FileNotFoundError:
            pass  # another vaultd ui removed it first


def write_redirect(folder: Path, url: str) -> Path:
    """A new 0600 page in ``folder`` that sends the browser on to ``url``."""
    path = folder / f"{_PREFIX}{secrets.token_hex(8)}.html"
    create_private_file(path, _REDIRECT.format(url=html.escape(url, quote=True)).encode())
    return path


def open_page(url: str, folder: Path, browser: webbrowser.BaseBrowser) -> bool:
    """Open ``url`` in ``browser`` through a redirect file; whether it started."""
    remove_stale(folder)
    path = write_redirect(folder, url)
    try:
        opened = browser.open(path.as_uri())
    except (webbrowser.Error, OSError):
        opened = False
    if not opened:
        path.unlink(missing_ok=True)
    return opened
