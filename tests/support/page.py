"""What the page's browser tests (tests/ui/) stand on: Chromium, and servers in a thread.

The browser is the distribution's Chromium (``apt install chromium``) driven
by Playwright, never a browser Playwright downloads. Without it the tests
are skipped, except under ``CI=true``, where they fail: CI installs it.

Playwright's synchronous API runs its own event loop, so these tests are
plain functions; the fake upstream and the other small servers they need run
on an event loop of their own, in a thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing a browser does on its own: no update checks, no sync,
# no QUIC probes, so every request it makes is one the page made.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> None:
    """Skip (fail under CI) unless Chromium and Playwright are both here."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if not missing:
        return
    reason = "the page's browser tests need " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium (callers share it across a module: starting one takes a second)."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """``app`` on 127.0.0.1 (a free port), on an event loop in a thread: its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    stopped: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        except BaseException as exc:
            stopped.append(exc)
            raise
        finally:
            ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="test-server", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if stopped:
        raise stopped[0]
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
