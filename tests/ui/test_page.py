"""The page (DESIGN 15) in a real browser, against a real daemon with real metered traffic.

One headless Chromium (the distribution's) and one ``vaultd serve`` serve the
whole module: the daemon proxies real calls to the fake provider
(tests/support/providers.py), which meters them, and its audit log also
holds 29 earlier days and rows whose paths, models and names are markup. The
page logs in through the URL ``vaultd ui --print-url`` prints, as a user's
would. Each view's numbers are held to what ``GET /api/usage`` and ``GET
/api/audit`` say; every test checks, when it ends, that the page made no
request to any other origin, ran into no CSP violation and threw nothing.

Screenshots of each view go to ``$VAULTD_UI_ARTIFACTS``, or a directory under
pytest's base temporary directory. ``pytest -m readme tests/ui`` refreshes
the README's (docs/ui-overview.png).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from tests.support.audit import audit_row, insert_audit
from tests.support.daemon import DaemonEnv, stop, vaultd_argv
from tests.support.page import chromium, serve_in_thread
from tests.support.providers import CHAT, TEST_PRICES, Call, provider_app
from vaultd.config import load_config
from vaultd.core.vault import open_vault
from vaultd.tokens import TOKEN_PREFIX

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

# One worker runs them all (pytest-xdist, --dist loadgroup): they share the
# module's browser and daemon, which each worker would otherwise start again.
pytestmark = pytest.mark.xdist_group("ui-page")

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400
KEYS = {
    "primary": "sk-proj-PAGEprimaryPAGEprimary0001",
    "hostile": "sk-proj-PAGEhostilePAGEhostile002",
    "anthropic": "sk-ant-PAGEanthropicPAGEanthro0003",
}
# Markup a local client may put in a name, metadata, a model or a path. Run,
# each would set window.__xss or load from the listener.
IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
HOSTILE_SESSION = f"{SCRIPT} {IMG}"
PAGE_READY = "body[data-state=ready]"


def leak_img(listener: str) -> str:
    return f'<img src="{listener}/leak">'


@dataclass
class Site:
    env: DaemonEnv
    daemon: subprocess.Popen[bytes]
    login_url: str
    admin: str
    tokens: dict[str, str]
    ids: dict[str, str]
    listener: str
    hits: list[str]
    attacker: str
    artifacts: Path

    @property
    def base(self) -> str:
        return self.env.base_url

    def api(self, path: str) -> Any:
        status, body = self.env.request("GET", path, self.admin)
        assert status == 200, body
        return body

    def chat(self, token: str, model: str = "gpt-test", **headers: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return self.env.request("POST", CHAT, token, body, headers)[0]


def today() -> int:
    return int(time.time()) // DAY * DAY


def utc_date(at: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


CONFIG = """
[proxy]
usage_flush_interval = "1s"
[services.openai]
base_url = "{upstream}"
[services.anthropic]
base_url = "{upstream}"
"""


def seed(env: DaemonEnv, listener: str) -> tuple[dict[str, str], dict[str, str]]:
    """Credentials, sessions and 29 days of history, written as the CLI writes them."""
    config = load_config(env=env.vars)
    ids: dict[str, str] = {}
    tokens: dict[str, str] = {}
    with open_vault(config) as vault:
        dek = vault.unlock()
        primary = vault.credentials.add(
            dek, service="openai", name="primary", secret=KEYS["primary"]
        )
        # Five of six a day used by the traffic below: near its cap.
        vault.credentials.update(primary.id, limits={"max_requests_per_day": 6})
        hostile = vault.credentials.add(
            dek,
            service="openai",
            name=IMG,
            secret=KEYS["hostile"],
            metadata={"note": SCRIPT, "where": leak_img(listener)},
        )
        anthropic = vault.credentials.add(
            dek,
            service="anthropic",
            name="main",
            secret=KEYS["anthropic"],
            expires_at=int(time.time()) + 3 * DAY,
        )
        ids.update(primary=primary.id, hostile=hostile.id, anthropic=anthropic.id)
        for name, scopes, limits, policy in [
            ("agent-a", ["proxy"], {"max_requests": 100, "max_cost_usd": 5.0}, {
                "allow": ["POST /v1/chat/completions", "POST /v1/messages"]
            }),
            (HOSTILE_SESSION, ["proxy"], None, None),
            ("to-revoke", ["proxy"], None, None),
            ("test-admin", ["read", "admin"], None, None),
        ]:  # fmt: skip
            session, token = vault.sessions.create(
                name=name,
                scopes=scopes,
                services=["*"],
                ttl=3600,
                known_services=config.services,
                limits=limits,
                policy=policy,
            )
            ids[name], tokens[name] = session.id, token
        insert_audit(vault.db, history(ids))
    return ids, tokens


def history(ids: dict[str, str]) -> list[Any]:
    """29 earlier days of calls, and today's rows that hold markup (refused ones among them),
    oldest first as the proxy writes them (the audit log lists by id, newest first)."""
    rows = []
    start = today()
    for days_ago in range(29, 0, -1):
        noon = start - days_ago * DAY + DAY // 2
        for i in range(1 + days_ago * 7 % 4):
            rows.append(
                audit_row(
                    noon + i * 60,
                    session_id=ids["agent-a"],
                    credential_id=ids["primary"],
                    model="gpt-test",
                    tokens=(12, 8, 4),
                    cost_usd=0.28,
                )
            )
        if days_ago % 3 == 0:
            rows.append(
                audit_row(
                    noon + 600,
                    session_id=ids["agent-a"],
                    credential_id=ids["anthropic"],
                    service="anthropic",
                    model="claude-sonnet-4-5",
                    tokens=(100, 50, 0),
                    cost_usd=0.05,
                )
            )
    earlier = max(start, int(time.time()) - 600)
    for path, refusal, status in [
        (f"/v1/{IMG}", "policy-denied", 403),
        (f"/v1/{SCRIPT}", None, 404),
    ]:
        rows.append(
            audit_row(
                earlier,
                session_id=ids[HOSTILE_SESSION],
                status=status,
                refusal=refusal,
                path=path,
                model=SCRIPT if refusal is None else None,
                tokens=(1, 1, 0) if refusal is None else None,
            )
        )
    return rows


def traffic(site: Site) -> int:
    """Real calls through the proxy to the fake provider; how many rows they make."""
    agent, hostile, revoke = (site.tokens[n] for n in ("agent-a", HOSTILE_SESSION, "to-revoke"))
    statuses = [site.chat(agent) for _ in range(3)]
    statuses.append(
        site.env.request(
            "POST",
            "/proxy/anthropic/v1/messages",
            agent,
            {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []},
        )[0]
    )
    statuses.append(site.chat(hostile, model="gpt-4o-mini"))
    statuses.append(site.chat(hostile, **{"X-Vaultd-Credential": site.ids["hostile"]}))
    statuses.append(site.chat(revoke))
    # Refused by agent-a's policy (only POSTs): audited, nothing goes upstream.
    statuses.append(site.env.request("GET", "/proxy/openai/v1/models", agent)[0])
    assert statuses == [200] * 7 + [403]
    return len(statuses)


def wait_for_rows(site: Site, count: int) -> None:
    """Until the usage writer has flushed ``count`` rows of the last hour."""
    for _ in range(100):
        if len(site.api("/api/audit?since=1h&limit=1000")) >= count:
            return
        time.sleep(0.1)
    pytest.fail("the audit rows were never flushed")


def listener_app(hits: list[str]) -> web.Application:
    """Records every request: markup that ran would load from here. Also the
    attacker's page, on another localhost port than the daemon's."""

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(
            text="<!doctype html><title>another page</title>", content_type="text/html"
        )

    async def attacker(request: web.Request) -> web.Response:
        # An empty icon: Chromium would otherwise ask this origin for /favicon.ico.
        page = '<!doctype html><link rel="icon" href="data:,"><title>attacker</title>'
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/attacker", attacker)
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as started:
        yield started


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("ui")
    given = os.environ.get("VAULTD_UI_ARTIFACTS")
    artifacts = Path(given) if given else tmp_path_factory.mktemp("ui-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    calls: list[Call] = []
    hits: list[str] = []
    with (
        serve_in_thread(provider_app(calls)) as upstream,
        serve_in_thread(listener_app(hits)) as listener,
    ):
        env = DaemonEnv(tmp, CONFIG.format(upstream=upstream) + TEST_PRICES)
        assert env.vaultd("init").returncode == 0
        ids, tokens = seed(env, listener)
        daemon, log = env.start()
        try:
            env.wait_healthy(daemon, log)
            printed = env.vaultd("ui", "--print-url")
            assert printed.returncode == 0, printed.stderr
            site = Site(
                env=env,
                daemon=daemon,
                login_url=printed.stdout.strip(),
                admin=tokens["test-admin"],
                tokens=tokens,
                ids=ids,
                listener=listener,
                hits=hits,
                attacker=f"{listener}/attacker",
                artifacts=artifacts,
            )
            wait_for_rows(site, traffic(site) + 2)
            yield site
        finally:
            assert stop(daemon) == 0, log.read_text()
        logged = log.read_text()
        page_token = printed.stdout.strip().partition("#token=")[2]
        for secret in (*KEYS.values(), *tokens.values(), page_token):
            assert secret not in logged


@dataclass
class Watched:
    """A page in a fresh browser context, and what it did."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__csp || []")
        return found

    def show(self, view: str) -> None:
        self.page.click(f"a[data-nav={view}]")
        self.page.wait_for_selector(f"{PAGE_READY}[data-view={view}]")

    def cells(self, selector: str, script: str) -> Any:
        return self.page.eval_on_selector_all(selector, script)


# Collected in the page before any of its scripts run (Playwright injects it
# outside the page's CSP): the violations the CSP reports.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
def open_page(browser: Browser, site: Site) -> Iterator[Callable[..., Watched]]:
    """``open_page()``: a fresh context (no storage, no cookies) logged in with the
    printed URL, its overview shown; checked when the test ends."""
    opened: list[Watched] = []

    def make(url: str | None = None, width: int = 1280, height: int = 900) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        watched = Watched(page)
        page.on("request", lambda request: watched.requests.append(request))
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
        page.add_init_script(CSP_WATCH)
        page.goto(url or site.login_url)
        page.wait_for_selector("body[data-state]:not([data-state=loading])")
        opened.append(watched)
        return watched

    yield make
    for watched in opened:
        try:
            assert watched.errors == []
            assert watched.csp_violations() == []
            # No third-party request (DESIGN 15), and the token never in a URL.
            for request in watched.requests:
                assert request.url.startswith(f"{site.base}/") or request.url.startswith("file:")
                assert TOKEN_PREFIX not in request.url.partition("#")[0]
                assert "cookie" not in request.headers
        finally:
            watched.page.context.close()
    assert site.hits == []


def test_login_moves_the_token_out_of_the_url(
    open_page: Callable[..., Watched], site: Site
) -> None:
    watched = open_page()
    page = watched.page
    page.wait_for_selector(f"{PAGE_READY}[data-view=overview]")
    token = site.login_url.partition("#token=")[2]
    # Gone from the address bar and the history entry; kept in this tab only.
    assert page.url == f"{site.base}/ui/"
    assert page.evaluate("location.hash") == ""
    assert page.evaluate("sessionStorage.getItem('vaultd-token')") == token
    assert page.evaluate("localStorage.length") == 0
    # No cookie, ever, for the origin.
    assert page.evaluate("document.cookie") == ""
    assert page.context.cookies() == []
    api_calls = [r for r in watched.requests if "/api/" in r.url]
    assert api_calls
    assert all(r.headers.get("authorization") == f"Bearer {token}" for r in api_calls)
    # A reload keeps the session (sessionStorage lives as long as the tab).
    page.reload()
    page.wait_for_selector(f"{PAGE_READY}[data-view=overview]")
    assert page.url == f"{site.base}/ui/"


def test_overview_matches_the_api(open_page: Callable[..., Watched], site: Site) -> None:
    watched = open_page()
    first = today() - 29 * DAY
    days = {g["key"]: g for g in site.api(f"/api/usage?by=day&since={first}")}
    expected = [days.get(utc_date(first + i * DAY)) for i in range(30)]
    for chart, field_name in (("#chart-cost", "cost_usd"), ("#chart-requests", "requests")):
        bars = watched.cells(
            f"{chart} rect.bar", "bars => bars.map(b => [b.dataset.key, +b.dataset.value])"
        )
        assert bars == [
            [utc_date(first + i * DAY), g[field_name] if g else 0] for i, g in enumerate(expected)
        ]
    now = expected[-1]
    # The real calls that went upstream, and the one 404 row written for today.
    assert now is not None and now["requests"] >= 8
    page = watched.page
    assert page.get_attribute("#today-requests", "data-value") == str(now["requests"])
    assert page.inner_text("#today-requests") == f"{now['requests']:,}"
    assert float(page.get_attribute("#today-cost", "data-value") or "nan") == now["cost_usd"]
    assert page.inner_text("#today-tokens") == f"{now['input_tokens']:,} / {now['output_tokens']:,}"
    attention = page.inner_text("#attention-table tbody")
    # openai/primary: 5 of its 6 a day; anthropic/main expires in 3 days.
    assert "openai/primary\t83% of a daily limit used today" in attention
    assert "anthropic/main\texpires in 3 d" in attention
    assert IMG not in attention


def test_credentials_match_the_api(open_page: Callable[..., Watched], site: Site) -> None:
    watched = open_page()
    watched.show("credentials")
    credentials = site.api("/api/credentials")
    used_today = {g["key"]: g for g in site.api(f"/api/usage?by=credential&since={today()}")}
    rows = watched.cells(
        "#credentials-table tbody tr",
        """rows => rows.map(r => [
              r.dataset.id, r.querySelector('th').firstChild.textContent,
              +r.querySelector('td.num').dataset.value,
              +r.querySelector('td.today').dataset.requests,
              r.querySelector('td.today').innerText])""",
    )
    assert [r[:4] for r in rows] == [
        [c["id"], c["name"], c["use_count"], used_today.get(c["id"], {"requests": 0})["requests"]]
        for c in credentials
    ]
    primary = next(r for r in rows if r[0] == site.ids["primary"])
    assert primary[3] == 5 and "5 / 6 requests" in primary[4]


def test_sessions_active_first_with_their_use(
    open_page: Callable[..., Watched], site: Site
) -> None:
    watched = open_page()
    watched.show("sessions")
    sessions = {s["id"]: s for s in site.api("/api/sessions")}
    rows = watched.cells(
        "#sessions-table tbody tr",
        "rows => rows.map(r => [r.dataset.id, r.querySelector('.status').textContent,"
        " +r.querySelector('[data-requests]').dataset.requests])",
    )
    assert sorted(r[0] for r in rows) == sorted(sessions)
    statuses = [r[1] for r in rows]
    assert statuses == sorted(statuses, key=lambda s: s != "active")
    for session_id, status, requests in rows:
        assert status == sessions[session_id]["status"]
        assert requests == sessions[session_id]["used"]["requests"]
    agent = watched.page.inner_text(f"tr[data-id='{site.ids['agent-a']}']")
    assert "allow POST /v1/chat/completions, POST /v1/messages" in agent
    assert "4 / 100 requests" in agent and "/ $5.00 spend" in agent
    assert "this page" in watched.page.inner_text("#sessions-table")


@pytest.mark.parametrize("by", ["session", "credential", "model", "service"])
def test_usage_matches_the_api(open_page: Callable[..., Watched], site: Site, by: str) -> None:
    watched = open_page()
    watched.show("usage")
    page = watched.page
    page.select_option("#usage-period", "all")
    page.wait_for_selector(PAGE_READY)
    page.select_option("#usage-by", by)
    page.wait_for_selector(PAGE_READY)
    groups = site.api(f"/api/usage?by={by}")
    rows = watched.cells(
        "#usage-table tbody tr",
        "rows => rows.map(r => [r.dataset.key,"
        " ...[...r.querySelectorAll('td')].map(c => +c.dataset.value)])",
    )
    assert rows == [
        [
            g["key"] or "",
            g["requests"],
            g["input_tokens"],
            g["output_tokens"],
            g["cached_input_tokens"],
            g["cost_usd"],
            g["unmetered_requests"],
            g["unpriced_requests"],
        ]
        for g in groups
    ]
    bars = watched.cells(
        "#chart-usage g[data-key]", "gs => gs.map(g => [g.dataset.key, +g.dataset.value])"
    )
    by_cost = sorted(groups, key=lambda g: -g["cost_usd"])[:12]
    assert bars == [[g["key"] or "", g["cost_usd"]] for g in by_cost]
    total = page.inner_text("#usage-table tfoot")
    assert f"{sum(g['requests'] for g in groups):,}" in total


def audit_ids(watched: Watched) -> list[int]:
    ids: list[int] = watched.cells(
        "#audit-table tbody tr[data-id]", "rs => rs.map(r => +r.dataset.id)"
    )
    return ids


def test_audit_newest_first_with_filters(open_page: Callable[..., Watched], site: Site) -> None:
    watched = open_page()
    watched.show("audit")
    page = watched.page

    def choose(select: str, value: str) -> None:
        page.select_option(select, value)
        page.wait_for_selector(PAGE_READY)

    choose("#audit-since", "")
    everything = site.api("/api/audit?limit=200")
    assert audit_ids(watched) == [e["id"] for e in everything]
    assert audit_ids(watched) == sorted(audit_ids(watched), reverse=True)
    for select, value, query in [
        ("#audit-service", "anthropic", "service=anthropic"),
        ("#audit-service", "", ""),
        ("#audit-session", site.ids[HOSTILE_SESSION], f"session_id={site.ids[HOSTILE_SESSION]}"),
        ("#audit-session", "", ""),
        ("#audit-status", "4xx", "status=4xx"),
        ("#audit-status", "refused", "refused=true"),
        ("#audit-since", "1h", "refused=true&since=1h"),
    ]:
        choose(select, value)
        expected = site.api(f"/api/audit?limit=200&{query}")
        assert audit_ids(watched) == [e["id"] for e in expected], query
    # Refusals are marked in words, not by colour alone.
    refused = watched.cells(
        "#audit-table tbody tr",
        "rs => rs.map(r => [r.className, r.querySelector('.refused-tag').textContent])",
    )
    assert refused
    assert {tuple(r) for r in refused} >= {("refused", "refused: policy-denied")}
    assert all(r[0] == "refused" for r in refused)


def test_revoking_a_session_from_the_page(open_page: Callable[..., Watched], site: Site) -> None:
    token = site.tokens["to-revoke"]  # it made a call that went through (traffic)
    watched = open_page()
    watched.show("sessions")
    page = watched.page
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"button[data-revoke='{site.ids['to-revoke']}']")
    page.wait_for_selector(f"tr[data-id='{site.ids['to-revoke']}'] .status-revoked")
    # Its very next proxied call.
    assert site.chat(token) == 401
    delete = [r for r in watched.requests if r.method == "DELETE"]
    assert [r.url for r in delete] == [f"{site.base}/api/sessions/{site.ids['to-revoke']}"]


def test_hostile_data_is_shown_as_text_and_never_run(
    open_page: Callable[..., Watched], site: Site
) -> None:
    watched = open_page()
    page = watched.page
    shown = {}
    for view in ("overview", "credentials", "sessions", "usage", "audit"):
        watched.show(view)
        if view == "usage":
            page.select_option("#usage-by", "model")
            page.wait_for_selector(PAGE_READY)
        if view == "audit":
            page.select_option("#audit-since", "")
            page.wait_for_selector(PAGE_READY)
        shown[view] = page.inner_text(f"#view-{view}")
    # The markup is on the page, as the characters it is made of.
    assert IMG in shown["credentials"]  # a credential's name
    assert f"note = {SCRIPT}" in shown["credentials"]  # metadata values
    assert f"where = {leak_img(site.listener)}" in shown["credentials"]
    assert HOSTILE_SESSION in shown["sessions"]  # a session's name
    assert SCRIPT in shown["usage"]  # a model, in the table and the chart
    assert page.eval_on_selector_all("#chart-usage text", "ts => ts.map(t => t.textContent)")
    assert f"POST /v1/{IMG}" in shown["audit"]  # audit paths
    assert f"POST /v1/{SCRIPT}" in shown["audit"]
    assert HOSTILE_SESSION in shown["audit"]
    # And none of it ran, loaded or became an element.
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
    assert page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == [
        "chart.js",
        "app.js",
    ]
    assert site.hits == []


def test_an_expired_session_says_to_run_vaultd_ui_again(
    open_page: Callable[..., Watched], site: Site
) -> None:
    printed = site.env.vaultd("ui", "--print-url")
    watched = open_page(printed.stdout.strip())
    page = watched.page
    token = page.evaluate("sessionStorage.getItem('vaultd-token')")
    session = next(s for s in site.api("/api/sessions") if s["key_prefix"] == token[:12])
    assert site.env.request("DELETE", f"/api/sessions/{session['id']}", site.admin)[0] == 204
    page.click("#refresh")
    page.wait_for_selector("body[data-state=login]")
    assert "session has expired or was revoked: run vaultd ui again" in page.inner_text("#login")
    assert page.evaluate("sessionStorage.getItem('vaultd-token')") is None
    # The 401 was the page's to handle: not an error in its console.
    watched.errors[:] = [e for e in watched.errors if "401" not in e]


def test_without_a_token_the_page_says_how_to_log_in(
    open_page: Callable[..., Watched], site: Site
) -> None:
    watched = open_page(f"{site.base}/ui/")
    assert watched.page.get_attribute("body", "data-state") == "login"
    assert "vaultd ui" in watched.page.inner_text("#login")
    assert not [r for r in watched.requests if "/api/" in r.url]


def test_login_through_the_redirect_file_vaultd_ui_opens(
    open_page: Callable[..., Watched], site: Site, tmp_path: Path
) -> None:
    args = tmp_path / "browser-args"
    script = tmp_path / "browser"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\n')
    script.chmod(0o700)
    done = subprocess.run(
        vaultd_argv("ui"),
        env={**site.env.vars, "BROWSER": str(script)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (opened,) = args.read_text().splitlines()
    assert opened.startswith("file:///") and TOKEN_PREFIX not in opened
    watched = open_page(opened)
    watched.page.wait_for_selector(f"{PAGE_READY}[data-view=overview]")
    assert watched.page.url == f"{site.base}/ui/"


def test_another_localhost_port_cannot_read_or_use_the_token(
    open_page: Callable[..., Watched], site: Site
) -> None:
    watched = open_page()
    page = watched.page
    token = page.evaluate("sessionStorage.getItem('vaultd-token')")
    assert token
    victim = site.ids["agent-a"]
    # The same tab, now on a page served from another port of this machine.
    page.goto(site.attacker)
    assert page.evaluate("sessionStorage.length") == 0
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    # Even handed the token, it cannot call the API: every request of a web
    # page carries its Origin, and this one is not the daemon's.
    for method, path in [("GET", "/api/credentials"), ("DELETE", f"/api/sessions/{victim}")]:
        outcome = page.evaluate(
            """async ([url, method, token]) => {
                try {
                  const r = await fetch(url, {method, headers: {Authorization: 'Bearer ' + token}});
                  return 'status ' + r.status;
                } catch (e) { return 'refused'; }
            }""",
            [f"{site.base}{path}", method, token],
        )
        assert outcome == "refused", (method, path)
    opaque = page.evaluate(
        "async (url) => (await fetch(url, {mode: 'no-cors'})).type", f"{site.base}/api/credentials"
    )
    assert opaque == "opaque"  # nothing of the answer is readable
    # Nor frame the page to read or click it.
    page.evaluate(
        """(url) => new Promise((done) => {
            const frame = document.createElement('iframe');
            frame.onload = done; frame.src = url; document.body.appendChild(frame);
            setTimeout(done, 2000);
        })""",
        f"{site.base}/ui/",
    )
    assert not [f for f in page.frames if f.url.startswith(site.base)]
    assert next(s for s in site.api("/api/sessions") if s["id"] == victim)["status"] == "active"
    watched.requests.clear()  # the attacker's page made them, not ours
    watched.errors.clear()  # its refused fetches and frame, reported in its console


def raw_status(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_foreign_origin_with_a_valid_token_is_403(site: Site) -> None:
    token = site.login_url.partition("#token=")[2]
    other = int(site.attacker.split(":")[2].split("/")[0])
    for origin in (
        "https://evil.example",
        f"http://127.0.0.1:{other}",
        f"http://localhost:{other}",
        "null",
    ):
        status, body = raw_status(
            f"{site.base}/api/credentials", {"Origin": origin, "Authorization": f"Bearer {token}"}
        )
        assert status == 403, origin
        assert body["type"].endswith("/forbidden-origin")
    # The page's own origin, with the same token, is let through.
    assert (
        raw_status(
            f"{site.base}/api/credentials",
            {"Origin": site.base, "Authorization": f"Bearer {token}"},
        )[0]
        == 200
    )


def set_page(site: Site, enabled: bool) -> None:
    """Turn the page on or off in the daemon's config, reload it, and wait for the change."""
    text = site.env.config_file.read_text().replace("\n[ui]\nenabled = false\n", "")
    site.env.config_file.write_text(text + ("" if enabled else "\n[ui]\nenabled = false\n"))
    site.daemon.send_signal(signal.SIGHUP)
    want = 200 if enabled else 404
    for _ in range(100):
        if raw_status(f"{site.base}/ui/", {})[0] == want:
            return
        time.sleep(0.05)
    pytest.fail(f"/ui/ never answered {want}")


def test_the_page_turned_off_is_404(open_page: Callable[..., Watched], site: Site) -> None:
    set_page(site, enabled=False)
    try:
        for path in ("/ui/", "/ui/app.js", "/ui"):
            status, body = raw_status(f"{site.base}{path}", {})
            assert status == 404 and body["type"].endswith("/not-found"), path
        done = site.env.vaultd("ui", "--print-url")
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            f"Error: the page is turned off: [ui] enabled = false in {site.env.config_file}"
        ]
    finally:
        set_page(site, enabled=True)
    # On again: the page serves once more, and a tab that holds a session goes on.
    watched = open_page()
    assert watched.page.get_attribute("body", "data-state") == "ready"


def test_keyboard_reaches_every_view(open_page: Callable[..., Watched], site: Site) -> None:
    watched = open_page()
    page = watched.page
    page.wait_for_selector(f"{PAGE_READY}[data-view=overview]")
    for view in ("credentials", "sessions", "usage", "audit", "overview"):
        for _ in range(20):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.dataset.nav") == view:
                break
        else:
            pytest.fail(f"Tab never reached the {view} link")
        # Where the focus is shows.
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.keyboard.press("Enter")
        page.wait_for_selector(f"{PAGE_READY}[data-view={view}]")
        assert page.get_attribute(f"a[data-nav={view}]", "aria-current") == "page"
    watched.show("sessions")
    assert page.eval_on_selector_all("[data-revoke]", "bs => bs.every(b => b.tagName === 'BUTTON')")


def screenshots(watched: Watched, folder: Path, suffix: str) -> None:
    for view in ("overview", "credentials", "sessions", "usage", "audit"):
        watched.show(view)
        watched.page.screenshot(path=str(folder / f"{view}{suffix}.png"), full_page=True)


def test_screenshots_of_each_view_on_a_laptop_and_a_phone(
    open_page: Callable[..., Watched], site: Site
) -> None:
    screenshots(open_page(), site.artifacts, "")
    phone = open_page(width=390, height=844)
    screenshots(phone, site.artifacts, "-phone")
    for view in ("overview", "credentials", "sessions", "usage", "audit"):
        assert (site.artifacts / f"{view}.png").stat().st_size > 10_000
        phone.show(view)
        # Wide tables scroll in their own box; the page itself never sideways.
        assert phone.page.evaluate("document.documentElement.scrollWidth <= innerWidth"), view


@pytest.mark.readme
def test_readme_screenshot(open_page: Callable[..., Watched]) -> None:
    """``pytest -m readme tests/ui``: the overview the README shows."""
    watched = open_page(width=1200, height=1000)
    watched.page.wait_for_selector(f"{PAGE_READY}[data-view=overview]")
    watched.page.screenshot(path=str(ROOT / "docs" / "ui-overview.png"), full_page=True)
