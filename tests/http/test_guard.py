"""The guard on its own, request in and refusal out, without a server (T3, T6)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from aiohttp import HttpVersion, web
from aiohttp.test_utils import make_mocked_request

from tests.support.config import write_api_config
from vaultd.errors import ConfigError, VaultdError
from vaultd.http.appkeys import REQUEST_ID
from vaultd.http.connections import ConnectionNotes
from vaultd.http.errors import ForbiddenHost, ForbiddenOrigin, UnsupportedMediaType
from vaultd.http.guard import MAX_HEAD, Guard, HostPolicy, split_host

PORT = 3978
HTTP11 = HttpVersion(1, 1)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("LOCALHOST:3978", True),
        ("127.0.0.1:3978", True),
        ("[::1]:3978", True),
        ("127.0.0.1:8080", False),  # another port: another service's name
        ("localhost6", False),
        ("127.1", False),
        ("0177.0.0.1", False),
        ("user@localhost", False),
        ("localhost:3978:1", False),
        ("evil.example", False),
        ("", False),
    ],
)
def test_only_loopback_names_on_the_listening_port(host: str, allowed: bool) -> None:
    assert HostPolicy(()).allows(host, PORT) is allowed


def test_configured_hosts_bare_or_with_their_own_port() -> None:
    policy = HostPolicy(("vaultd.internal", "box:8080"))
    assert policy.allows("vaultd.internal", PORT)
    assert policy.allows(f"vaultd.internal:{PORT}", PORT)
    assert not policy.allows("vaultd.internal:9999", PORT)
    assert policy.allows("box:8080", PORT)
    assert not policy.allows("box", PORT)
    with pytest.raises(ConfigError, match="allowed_hosts"):
        HostPolicy(("user@host",))
    assert split_host(" Example.COM:80 ") == ("example.com", 80)


class _Noted(ConnectionNotes):
    def __init__(self) -> None:
        self.listening_port = PORT
        self.head_arrival = None


def request(
    method: str = "GET",
    path: str = "/api/credentials",
    headers: dict[str, str] | None = None,
    version: HttpVersion = HTTP11,
) -> web.Request:
    sent = {"Host": f"127.0.0.1:{PORT}", **(headers or {})}
    # As vaultd serve's connections note it (http.connections).
    transport = mock.Mock()
    transport.get_protocol.return_value = _Noted()
    made = make_mocked_request(method, path, headers=sent, version=version, transport=transport)
    made[REQUEST_ID] = "01234567-89ab-7def-8123-456789abcdef"
    return made


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    config = write_api_config(tmp_path, '[server]\nallowed_origins = ["http://tool.local"]\n')
    return Guard(config)


def test_a_plain_request_passes(guard: Guard) -> None:
    assert guard.refusal(request()) is None
    assert (
        guard.refusal(request("POST", "/proxy/openai/v1/x", {"Content-Type": "text/plain"})) is None
    )


@pytest.mark.parametrize(
    ("made", "detail"),
    [
        (lambda: request(version=HttpVersion(2, 0)), "only HTTP/1.0 and HTTP/1.1"),
        (
            lambda: request(headers={"Transfer-Encoding": "chunked"}, version=HttpVersion(1, 0)),
            "must not carry Transfer-Encoding",
        ),
        (lambda: request(path="http://other.host/api/credentials"), "must be a path"),
    ],
)
def test_untrustworthy_framing_is_refused_and_the_connection_closed(
    guard: Guard, made: object, detail: str
) -> None:
    response = guard.refusal(made())  # type: ignore[operator]
    assert response is not None
    assert response.status == 400
    assert detail in response.text  # type: ignore[operator]
    assert response.keep_alive is False


def test_a_head_over_the_limit_is_a_431(guard: Guard) -> None:
    with pytest.raises(VaultdError) as refused:
        guard.refusal(request(headers={"X-Big": "x" * MAX_HEAD}))
    assert refused.value.status == 431


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Host": "evil.example"}, ForbiddenHost),
        ({"Origin": "https://evil.example"}, ForbiddenOrigin),
        ({"Origin": "null"}, ForbiddenOrigin),
        ({"Sec-Fetch-Site": "cross-site"}, ForbiddenOrigin),
        ({"Sec-Fetch-Site": "same-site"}, ForbiddenOrigin),
    ],
)
def test_browsers_and_rebinding_are_refused(
    guard: Guard, headers: dict[str, str], error: type[VaultdError]
) -> None:
    with pytest.raises(error):
        guard.refusal(request(headers=headers))


def test_a_configured_origin_passes(guard: Guard) -> None:
    assert guard.refusal(request(headers={"Origin": "http://tool.local"})) is None


def test_api_bodies_must_be_json(guard: Guard) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        guard.refusal(request("POST", "/api/sessions", {"Content-Type": "text/plain"}))
    with pytest.raises(UnsupportedMediaType, match="UTF-8"):
        guard.refusal(
            request("POST", "/api/sessions", {"Content-Type": "application/json; charset=latin-1"})
        )
    assert (
        guard.refusal(request("POST", "/api/sessions", {"Content-Type": "application/json"}))
        is None
    )
