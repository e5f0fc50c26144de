"""aiohttp's internals only as checked fast paths: each falls back to the public API.

The proxy and SDK suites run here a second time with ``VAULTD_FAST_PATHS=off``:
the public paths must give every answer the fast ones give.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import client_reqrep, web, web_protocol
from aiohttp.typedefs import Handler

from tests.support.upstream import Proxy
from vaultd.daemon import connection_fast
from vaultd.daemon.app import create_app
from vaultd.daemon.connection import DaemonRunner
from vaultd.daemon.runners import daemon_runner
from vaultd.errors import ConfigError
from vaultd.http import fastpaths
from vaultd.proxy import client_fast
from vaultd.proxy.client import UpstreamClient
from vaultd.proxy.client_fast import FastUpstreamClient
from vaultd.proxy.direct import front_door
from vaultd.proxy.routes import FORWARDER

ROOT = Path(__file__).resolve().parents[2]
# Every test that sends a request through the proxy (tests/proxy/ holds the
# proxy's own, the official SDKs among them), and those that go through it
# from the CLI, a restored vault and a daemon shutting down.
PROXY_SUITE = (
    "tests/proxy",
    "tests/cli/test_run_and_audit.py",
    "tests/core/test_rekey_and_restore.py",
    "tests/daemon/test_shutdown_flush.py",
)


def test_this_aiohttp_has_the_internals_the_fast_paths_call() -> None:
    """On the aiohttp the tests run with, both fast paths are taken (else the bench lies)."""
    assert client_fast.internals_missing() is None
    assert connection_fast.internals_missing() is None


def test_a_changed_client_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def send(self: object, connection: object) -> None:  # "conn" renamed
        raise AssertionError("never called")

    monkeypatch.setattr(client_reqrep.ClientRequest, "send", send)
    assert client_fast.internals_missing() == "ClientRequest.send takes no conn"


def test_a_changed_server_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(web_protocol, "_ErrInfo")
    assert connection_fast.internals_missing() == "web_protocol._ErrInfo is gone"


def test_fast_paths_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (
        ("", {"client", "server"}),
        ("auto", {"client", "server"}),
        ("OFF", set()),
        ("client", {"client"}),
        ("server, client", {"client", "server"}),
    ):
        monkeypatch.setenv(fastpaths.ENV_VAR, value)
        assert fastpaths.allowed() == expected, value
    for wrong in ("fast please", "client,turbo", "0"):
        monkeypatch.setenv(fastpaths.ENV_VAR, wrong)
        with pytest.raises(ConfigError, match="VAULTD_FAST_PATHS must be auto, off, or some"):
            fastpaths.allowed()


def test_one_path_can_be_kept_without_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpaths, "_chosen", {})
    monkeypatch.setenv(fastpaths.ENV_VAR, "client")
    assert fastpaths.choose("client", lambda: None) is True
    assert fastpaths.choose("server", lambda: None) is False
    assert fastpaths.summary() == "client on, server off"


def test_a_missing_internal_means_the_public_path_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vaultd")
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    monkeypatch.setattr(fastpaths, "_chosen", {})
    monkeypatch.setattr(connection_fast, "internals_missing", lambda: "RequestHandler moved")
    for _ in range(3):
        runner = daemon_runner(web_app())
        assert type(runner) is DaemonRunner
    warnings = [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()]
    assert warnings == ["fast path server: off (RequestHandler moved); using aiohttp's public API"]
    assert fastpaths.summary() == "server off"


def test_a_probe_whose_import_fails_means_the_public_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    monkeypatch.setattr(fastpaths, "_chosen", {})

    def moved() -> str | None:
        raise ImportError("cannot import name 'ClientRequest'")

    assert fastpaths.choose("client", moved) is False
    assert fastpaths.summary() == "client off"


def web_app() -> web.Application:
    return web.Application()


async def test_the_proxy_takes_the_fast_client_unless_told_not_to(proxy: Proxy) -> None:
    upstream = proxy.client.app[FORWARDER].upstream
    expected = UpstreamClient if os.environ.get(fastpaths.ENV_VAR) == "off" else FastUpstreamClient
    assert type(upstream) is expected


async def test_an_app_with_a_lookalike_middleware_is_not_fronted(
    proxy: Proxy,
) -> None:
    """front_door knows the app by the chain objects create_app installed, not their names."""
    app = create_app(proxy.config)

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)  # the same name as create_app's, none of its checks

    app.middlewares[0] = guarded

    async def routed(request: object) -> web.StreamResponse:
        raise AssertionError("not called")

    app[FORWARDER] = proxy.client.app[FORWARDER]
    assert front_door(app, routed) is routed


@pytest.mark.skipif(
    os.environ.get(fastpaths.ENV_VAR) == "off", reason="this is the run on the public paths"
)
@pytest.mark.timeout(900)
def test_the_proxy_and_sdk_suites_pass_on_the_public_paths(tmp_path: Path) -> None:
    """Everything the proxy answers, it answers the same on aiohttp's public API alone."""
    env = {**os.environ, fastpaths.ENV_VAR: "off"}
    result = subprocess.run(
        # In one process (-n 0): this test already has a worker of the suite's
        # to itself, and more workers under it would only contend for the cores.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *PROXY_SUITE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    tail = "\n".join(result.stdout.splitlines()[-30:])
    assert result.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail
