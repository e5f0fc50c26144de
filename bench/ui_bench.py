"""What the page (/ui/) costs a browser: bytes on first load, and time to the overview.

Runs a real `vaultd serve` on a throw-away vault holding 30 days of use and
10,000 audit rows (written with the store's own insert statements), logs in
with the URL `vaultd ui --print-url` prints, and loads the page in the
distribution's headless Chromium (Playwright drives it), in a fresh browser
context each run: nothing cached, as on a first visit. Prints the bytes the
browser received (headers and bodies: the page's files, then the API's
answers) and the time from navigation to the overview drawn, median of the
runs; targets < 300 KB and < 1 s. Also the audit view's time over the same
rows.
Usage: .venv/bin/python bench/ui_bench.py [--rows 10000] [--days 30] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from proxy_bench import free_port, wait_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
# When the page marks itself ready (body[data-state=ready]), in ms since navigation.
READY_WATCH = """
window.__ready = {};
new MutationObserver(() => {
  const b = document.body;
  if (b && b.dataset.state === "ready") window.__ready[b.dataset.view] ??= performance.now();
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-state"]});
"""
SEED = """
import sys, time, uuid
from vaultd.config import load_config
from vaultd.core.vault import open_vault
from vaultd.store.audit import AuditEntry, insert_batches

rows, days = int(sys.argv[1]), int(sys.argv[2])
config = load_config()
with open_vault(config) as vault:
    dek = vault.unlock()
    creds = [vault.credentials.add(dek, service=s, name=f"key-{i}",
             secret=f"sk-bench-{i:04d}-abcdefghijklmnopqrstuvwxyz0123")
             for i, s in enumerate(["openai", "anthropic", "openai", "gemini", "mistral"])]
    sessions = [vault.sessions.create(name=f"agent-{i}", scopes=["proxy"], services=["*"],
                ttl=86400, known_services=config.services)[0] for i in range(20)]
    now = int(time.time())
    models = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "mistral-small"]
    entries = []
    for n in range(rows):
        at = now - (rows - n) * days * 86400 // rows
        i = n % len(models)
        refused = n % 50 == 0
        entries.append(AuditEntry(
            at=at, request_id=str(uuid.uuid4()), session_id=sessions[n % 20].id,
            credential_id=creds[i].id, service=creds[i].service, method="POST",
            path="/v1/chat/completions", status=429 if refused else 200,
            duration_ms=120.0 + n % 300, bytes_in=800, bytes_out=1600,
            model=None if refused else models[i], input_tokens=None if refused else 900,
            output_tokens=None if refused else 300, cached_input_tokens=None if refused else 100,
            cost_usd=None if refused else 0.0012,
            refusal="limit-exceeded session.rpm" if refused else None,
            usage_partial=None if refused else 0)[:-1])
    with vault.db.conn:
        for sql, params in insert_batches(entries):
            vault.db.conn.execute(sql, params)
"""


def vaultd(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vaultd", *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def load(browser: Any, url: str, view: str) -> tuple[float, dict[str, int]]:
    """One first visit: ms to ``view`` drawn (from navigation for the overview, from
    the click on its link for another view), and the bytes received for it, by kind."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script(READY_WATCH)
    finished: list[Any] = []
    page.on("requestfinished", lambda request: finished.append(request))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready][data-view=overview]")
    start = 0.0
    if view != "overview":
        finished.clear()
        start = float(page.evaluate("performance.now()"))
        page.click(f"a[data-nav={view}]")
        page.wait_for_selector(f"body[data-state=ready][data-view={view}]")
    ready = float(page.evaluate(f"window.__ready[{view!r}]")) - start
    received = {"page files": 0, "API answers": 0}
    for request in finished:
        sizes = request.sizes()
        kind = "API answers" if "/api/" in request.url else "page files"
        received[kind] += sizes["responseHeadersSize"] + sizes["responseBodySize"]
    context.close()
    return ready, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="vaultd-ui-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "VAULTD_"))}
    env["HOME"] = str(home)
    os.umask(0o077)
    (home / ".config" / "vaultd").mkdir(parents=True)
    (home / ".config" / "vaultd" / "config.toml").write_text(f"[server]\nport = {port}\n")
    vaultd(env, "init")
    subprocess.run(
        [sys.executable, "-c", SEED, str(args.rows), str(args.days)], env=env, check=True
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vaultd", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        url = vaultd(env, "ui", "--print-url").strip()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            load(browser, url, "overview")  # warm the daemon's and the browser's code paths
            for view in ("overview", "audit"):
                timings = []
                received: dict[str, int] = {}
                for _ in range(args.runs):
                    ready, received = load(browser, url, view)
                    timings.append(ready)
                timings.sort()
                total = sum(received.values())
                print(
                    f"{view}, {args.days} days of use, {args.rows:,} audit rows,"
                    f" {args.runs} first loads:"
                )
                since = "navigation" if view == "overview" else "the click on its link"
                print(
                    f"  to {view} drawn (ms since {since}): median"
                    f" {statistics.median(timings):.0f}  min {timings[0]:.0f}"
                    f"  max {timings[-1]:.0f}  target < 1000"
                )
                parts = ", ".join(f"{kind} {size / 1024:.1f}" for kind, size in received.items())
                print(f"  received (KiB): {total / 1024:.1f} ({parts})  target < 300 KB")
            browser.close()
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
