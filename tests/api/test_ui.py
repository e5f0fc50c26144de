"""``/ui/``: the page's files, served with DESIGN 15's headers on every answer.

What the page does in a browser is tested in tests/ui/; here, what the
daemon sends: which files, with which headers, and nothing when the page is
off. And the files themselves: no markup parsed from data, nothing from
another host.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.config import write_api_config
from tests.support.http import problem, raw_http, start_client
from vaultd.api.ui import page_files

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "chart.js": "text/javascript",
    "app.css": "text/css",
}


def assert_page_headers(response: Any) -> None:
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)
    assert "Set-Cookie" not in response.headers
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_the_page_and_its_files(api_client: TestClient[Any, Any]) -> None:
    assert set(page_files()) == set(ASSETS)
    for path, name in [("/ui/", "index.html"), *((f"/ui/{n}", n) for n in ASSETS)]:
        response = await api_client.get(path)
        assert response.status == 200, path
        assert response.content_type == ASSETS[name]
        assert response.charset == "utf-8"
        assert await response.read() == page_files()[name]
        assert_page_headers(response)


async def test_ui_without_its_slash_redirects(api_client: TestClient[Any, Any]) -> None:
    response = await api_client.get("/ui", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/ui/"
    assert_page_headers(response)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/..%2fapi%2fopenapi.json",
        "/ui/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/ui/app.js/x",
        "/ui/app.js%00.css",
        "/ui/.app.css",
    ],
)
async def test_only_the_page_files_are_served(api_client: TestClient[Any, Any], path: str) -> None:
    port = api_client.port
    assert port is not None
    # Sent as written: a client library would resolve the dot segments itself.
    status, headers, body = await raw_http(
        "127.0.0.1",
        port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 404, body
    assert b"not-found" in body
    assert headers["content-security-policy"] == CSP


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/ui/", {"Host": "evil.example"}, 403),
        ("GET", "/ui/app.js", {"Origin": "https://evil.example"}, 403),
        ("POST", "/ui/", {}, 405),
        ("HEAD", "/ui/", {}, 405),
        ("GET", "/%75i/", {}, 200),
    ],
)
async def test_every_answer_under_ui_carries_the_headers(
    api_client: TestClient[Any, Any], method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = await api_client.request(method, path, headers=headers)
    assert response.status == status
    assert_page_headers(response)


async def test_the_api_does_not_get_the_page_headers(api_client: TestClient[Any, Any]) -> None:
    # Only the page: the API's answers are JSON for programs, and the proxy's
    # are the upstream's to shape.
    response = await api_client.get("/healthz")
    assert "Content-Security-Policy" not in response.headers


async def test_off_the_page_is_404_like_any_unknown_path(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start_client(
        aiohttp_client, write_api_config(tmp_path, "[ui]\nenabled = false\n")
    )
    unknown = await (await client.get("/nowhere")).json()
    for path in ("/ui", "/ui/", "/ui/app.js"):
        response = await client.get(path, allow_redirects=False)
        body = await problem(response, 404, "not-found")
        assert body["detail"] == unknown["detail"]
        assert_page_headers(response)


# What would parse data as markup or run it as code; the page builds the DOM
# from text nodes only (app.js's header says why).
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
    r"setTimeout\(\s*['\"]|srcdoc|DOMParser|createContextualFragment"
)


@pytest.mark.parametrize("name", ["app.js", "chart.js"])
def test_scripts_never_parse_markup(name: str) -> None:
    text = page_files()[name].decode()
    assert not MARKUP_SINKS.search(text), MARKUP_SINKS.search(text)


def test_no_file_names_another_host() -> None:
    # No third-party request (DESIGN 15): no absolute URL at all, bar the SVG
    # namespace (an identifier, never fetched).
    for name, body in page_files().items():
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", body.decode())
        assert urls in ([], ["http://www.w3.org/2000/svg"]), (name, urls)
        assert "@import" not in body.decode()


def test_the_page_is_small() -> None:
    # DESIGN 15's page stays a few files a user can read; the bench measures the
    # whole first load (bench/ui_bench.py).
    assert sum(len(body) for body in page_files().values()) < 100 * 1024
