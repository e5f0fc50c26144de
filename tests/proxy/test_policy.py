"""A session's request policy (DESIGN 11) on the proxy, over real HTTP.

Every refusal is checked as a user would check it: the status and problem
slug the client gets, that the upstream received nothing at all, and the
audit row's ``refusal``. Every allowed request: that the upstream received
exactly it, at the path the policy matched. Requests that play games with
the request line go out on a raw socket, byte for byte as written here.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.http import bearer, problem, raw_http
from tests.support.providers import CHAT, Call, Client, provider_rig
from tests.support.providers import ProviderRig as Rig
from tests.support.upstream import OPENAI_KEY, OTHER_KEY, raw_upstream, vaultd_for
from vaultd.core.policy import READ_ONLY, check_policy, decide
from vaultd.http.appkeys import VAULT
from vaultd.proxy.decisions import checked_tail, policy_path
from vaultd.proxy.errors import BadProxyPath, MethodOverrideRefused, PolicyDenied

DENIED = "policy-denied"
OVERRIDE = "method-override-refused"
BAD_PATH = "bad-proxy-path"
CHAT_BODY = b'{"model":"gpt-4o-mini","messages":[]}'
JSON_TYPE = "application/json"


@pytest.fixture
async def rig(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Rig:
    return await provider_rig(tmp_path, aiohttp_client, aiohttp_server)


# -- helpers -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self, status: int, slug: str) -> dict[str, Any]:
        """The problem body, after checking its status and type (as ``http.problem``)."""
        assert self.status == status, self.body[:500]
        assert self.headers["content-type"].startswith("application/problem+json")
        data: dict[str, Any] = json.loads(self.body)
        assert data["request_id"] == self.headers["x-request-id"]
        assert data["type"].endswith("/" + slug), data
        assert data["status"] == status
        assert data["error"]["type"] == slug, data
        return data


async def send(
    rig: Rig,
    method: str,
    target: str,
    token: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    """``method target`` with ``body`` on a raw socket: the request line goes as written."""
    port = rig.client.port
    assert port is not None  # started
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {token}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    status, reply_headers, reply_body = await raw_http("127.0.0.1", port, head + body)
    return Reply(status, reply_headers, reply_body)


async def refusals(rig: Rig) -> list[str | None]:
    """Each audit row's ``refusal``, oldest first."""
    return [row["refusal"] for row in await rig.audit()]


def sent(rig: Rig) -> list[tuple[str, str]]:
    """What the upstream received: (method, path and query) of each request."""
    return [(call.method, call.path) for call in rig.calls]


# What a path segment may hold as it is (RFC 3986 pchar, less "%" and ";"): an
# escape of one of these is how a client would write a path the rules do not
# read as the upstream does. Upper-case hex digits only, as ``quote`` writes them.
PLAIN = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,=:@")


def needless_escapes(raw_path: str) -> list[str]:
    """The escapes in ``raw_path`` that a canonical path would not have."""
    return [
        escape
        for escape in re.findall(r"%[0-9A-Fa-f]{2}", raw_path)
        if chr(int(escape[1:], 16)) in PLAIN or escape != escape.upper()
    ]


# -- 1. the official SDK -----------------------------------------------------------


async def test_the_openai_sdk_hears_which_model_and_which_call_the_policy_refuses(
    rig: Rig,
) -> None:
    token = rig.mint(policy={"models": ["gpt-4o-mini"], "allow": ["POST /v1/chat/completions"]})
    base = str(rig.client.make_url("/proxy/openai/v1"))
    with openai.OpenAI(base_url=base, api_key=token, max_retries=0) as client:

        def chat(model: str) -> str | None:
            answer = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
            return answer.choices[0].message.content

        assert await asyncio.to_thread(chat, "gpt-4o-mini") == "Hello there!"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await asyncio.to_thread(chat, "gpt-4o")
        assert refused.value.status_code == 403
        assert 'model "gpt-4o" is not in the allowed models' in str(refused.value)
        with pytest.raises(openai.PermissionDeniedError) as listing:
            await asyncio.to_thread(client.models.list)
        assert listing.value.status_code == 403
        assert "no allow rule matches GET /v1/models" in str(listing.value)
    assert sent(rig) == [("POST", "/v1/chat/completions")]
    assert rig.calls[0].json()["model"] == "gpt-4o-mini"
    assert await refusals(rig) == [None, DENIED, DENIED]


# -- 2. read-only against a GitHub-shaped upstream ---------------------------------


def github_app(calls: list[Call]) -> web.Application:
    """Issues of one repository, as GitHub's REST API has them; every call recorded."""

    async def issues(request: web.Request) -> web.Response:
        calls.append(
            Call(request.method, request.path_qs, await request.read(), dict(request.headers))
        )
        if request.method in ("GET", "HEAD"):
            return web.json_response([{"number": 1, "title": "a bug"}])
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={"Allow": "GET, POST, PATCH, DELETE"})
        if request.method == "DELETE":
            return web.Response(status=204)
        return web.json_response({"number": 2}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", issues)
    return app


@pytest.fixture
async def github(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Rig:
    """vaultd whose every service (github among them) is ``github_app``."""
    calls: list[Call] = []
    upstream = await aiohttp_server(github_app(calls), host="127.0.0.1")
    client, config, ids = await vaultd_for(
        f"http://127.0.0.1:{upstream.port}", tmp_path, aiohttp_client
    )
    return Rig(client, config, calls, ids)


ISSUES = "/proxy/github/repos/o/r/issues"


async def test_read_only_lets_get_head_and_options_through(github: Rig) -> None:
    token = github.mint(policy={"allow": list(READ_ONLY)}, services=["github"])
    response = await github.client.get(ISSUES, headers=bearer(token))
    assert response.status == 200
    assert await response.json() == [{"number": 1, "title": "a bug"}]
    assert (await github.client.head(ISSUES, headers=bearer(token))).status == 200
    response = await github.client.options(ISSUES + "/1", headers=bearer(token))
    assert response.status == 204
    assert sent(github) == [
        ("GET", "/repos/o/r/issues"),
        ("HEAD", "/repos/o/r/issues"),
        ("OPTIONS", "/repos/o/r/issues/1"),
    ]
    assert github.calls[0].headers["Authorization"] == "Bearer ghp_GITHUBKEYgithubkey0004"
    assert await refusals(github) == [None, None, None]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_read_only_refuses_every_write_before_it_reaches_the_upstream(
    github: Rig, method: str
) -> None:
    token = github.mint(policy={"allow": list(READ_ONLY)}, services=["github"])
    response = await github.client.request(
        method, ISSUES + "/1", json={"title": "pwned"}, headers=bearer(token)
    )
    body = await problem(response, 403, DENIED)
    assert body["detail"] == f"no allow rule matches {method} /repos/o/r/issues/1"
    assert github.calls == []
    assert await refusals(github) == [DENIED]


# -- 3. attempts to get past the rules ---------------------------------------------

DENY_CHAT: dict[str, Any] = {"deny": ["POST /v1/chat/completions"]}
ALLOW_CHAT: dict[str, Any] = {"allow": ["POST /v1/chat/completions"]}
MINI: dict[str, Any] = {"models": ["gpt-4o-mini"]}


@dataclass(frozen=True)
class Case:
    """One request under one policy, and what must come of it."""

    policy: dict[str, Any]
    method: str
    target: str
    status: int
    slug: str | None = None  # the problem's; None: not refused
    upstream: str | None = None  # the path the upstream must get (None: nothing)
    headers: tuple[tuple[str, str], ...] = (("Content-Type", JSON_TYPE),)
    body: bytes = CHAT_BODY
    detail: str | None = None  # a part of the problem's detail
    audited: bool = True  # False: refused by the HTTP parser, before any session


def case(id_: str, *args: Any, **kw: Any) -> Any:
    return pytest.param(Case(*args, **kw), id=id_)


CHAT_AT = "/proxy/openai/v1/chat/"
GEMINI = "/proxy/gemini/v1beta/models/"
GEMINI_BODY = b'{"contents":[{"parts":[{"text":"hi"}]}]}'
GZIPPED = (("Content-Type", JSON_TYPE), ("Content-Encoding", "gzip"))
TWO_ENCODINGS = (
    ("Content-Type", JSON_TYPE),
    ("Content-Encoding", "identity"),
    ("Content-Encoding", "gzip"),
)
MULTIPART_BODY = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o\r\n--b--\r\n'

BYPASSES = [
    # Escapes of ordinary characters are decoded before the rules match...
    case("escaped-s-denied", DENY_CHAT, "POST", CHAT_AT + "completion%73", 403, DENIED),
    case("escaped-letters-denied", DENY_CHAT, "POST", "/proxy/openai/v1/%63hat/%63ompletions",
         403, DENIED, detail='denied by "POST /v1/chat/completions"'),
    case("escaped-lowercase-hex-denied", DENY_CHAT, "POST", CHAT_AT + "c%6fmpletions", 403,
         DENIED),
    # ... and what is allowed goes upstream as it was matched.
    case("escaped-s-allowed", ALLOW_CHAT, "POST", CHAT_AT + "completion%73", 200,
         upstream="/v1/chat/completions"),
    case("escaped-letters-allowed", ALLOW_CHAT, "POST", "/proxy/openai/v1/%63hat/completions",
         200, upstream="/v1/chat/completions"),
    case("escaped-service-name", DENY_CHAT, "POST", "/proxy/open%61i/v1/chat/completions",
         403, DENIED),
    # A "#" or an escaped "?" is part of the path: sent escaped, not as a cut.
    case("fragment", DENY_CHAT, "POST", CHAT_AT + "completions#x", 404,
         upstream="/v1/chat/completions%23x"),
    case("escaped-question-mark", DENY_CHAT, "POST", CHAT_AT + "completions%3Fx", 404,
         upstream="/v1/chat/completions%3Fx"),
    # What decoding would reshape is refused before any rule.
    case("encoded-slash", DENY_CHAT, "POST", "/proxy/openai/v1/chat%2Fcompletions", 400,
         BAD_PATH),
    case("encoded-slash-lower", ALLOW_CHAT, "POST", "/proxy/openai/v1%2fchat/completions", 400,
         BAD_PATH),
    case("encoded-backslash", DENY_CHAT, "POST", "/proxy/openai/v1/chat%5Ccompletions", 400,
         BAD_PATH),
    case("double-slash", DENY_CHAT, "POST", "/proxy/openai/v1//chat/completions", 400,
         BAD_PATH),
    case("leading-double-slash", DENY_CHAT, "POST", "/proxy/openai//v1/chat/completions", 400,
         BAD_PATH),
    case("dot-dot", DENY_CHAT, "POST", "/proxy/openai/v1/x/../chat/completions", 400,
         BAD_PATH),
    case("dot", DENY_CHAT, "POST", "/proxy/openai/v1/./chat/completions", 400, BAD_PATH),
    case("encoded-dot-dot", DENY_CHAT, "POST", "/proxy/openai/v1/x/%2e%2e/chat/completions",
         400, BAD_PATH),
    case("half-encoded-dot-dot", DENY_CHAT, "POST", "/proxy/openai/v1/x/.%2E/chat/completions",
         400, BAD_PATH),
    case("double-encoded-s", DENY_CHAT, "POST", CHAT_AT + "completion%2573", 400, BAD_PATH),
    case("path-parameter", DENY_CHAT, "POST", CHAT_AT + "completions;x=1", 400, BAD_PATH),
    # A trailing slash: servers that ignore it (Express by default) read the
    # denied endpoint, so a deny rule holds there too.
    case("trailing-slash-denied", DENY_CHAT, "POST", CHAT_AT + "completions/", 403, DENIED),
    case("trailing-slash-not-allowed", ALLOW_CHAT, "POST", CHAT_AT + "completions/", 403,
         DENIED),
    # Methods: compared exactly; overrides refused.
    case("other-method", ALLOW_CHAT, "PUT", CHAT_AT + "completions", 403, DENIED,
         detail="no allow rule matches PUT /v1/chat/completions"),
    case("unknown-method", ALLOW_CHAT, "PROPFIND", CHAT_AT + "completions", 403, DENIED),
    *(
        case(f"override-{name}-{kind}", policy, "POST", CHAT_AT + "completions", 400, OVERRIDE,
             headers=(("Content-Type", JSON_TYPE), (name, "DELETE")), detail=name)
        for name in ("X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method",
                     "x_http_method_override")
        for kind, policy in (("allow", ALLOW_CHAT), ("deny", DENY_CHAT))
    ),
    # (An answer to HEAD has no body: its status and the audit row tell.)
    case("head-where-get-allowed", {"allow": ["GET /v1/models"]}, "HEAD",
         "/proxy/openai/v1/models", 403, body=b"", headers=()),
    case("get-where-head-allowed", {"allow": ["HEAD /v1/models"]}, "GET",
         "/proxy/openai/v1/models", 403, DENIED, body=b"", headers=()),
    case("get-where-get-allowed", {"allow": ["GET /v1/models"]}, "GET",
         "/proxy/openai/v1/models", 200, upstream="/v1/models", body=b"", headers=()),
    # The model a body names, read so that no parser can read another.
    case("model-allowed", MINI, "POST", CHAT_AT + "completions", 200,
         upstream="/v1/chat/completions"),
    case("model-refused", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":"gpt-4o","messages":[]}', detail='model "gpt-4o" is not'),
    case("model-twice", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}', detail="twice"),
    case("model-twice-escaped", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":"gpt-4o-mini","mod\\u0065l":"gpt-4o"}', detail="twice"),
    case("model-other-case", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":"gpt-4o-mini","Model":"gpt-4o"}', detail="Model"),
    case("model-only-other-case", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"MODEL":"gpt-4o","messages":[]}', detail="MODEL"),
    case("model-nested-is-not-the-model", MINI, "POST", CHAT_AT + "completions", 200,
         upstream="/v1/chat/completions",
         body=b'{"model":"gpt-4o-mini","metadata":{"model":"x"}}'),
    case("model-gzip", MINI, "POST", CHAT_AT + "completions", 403, DENIED, headers=GZIPPED,
         body=gzip.compress(b'{"model":"gpt-4o","messages":[]}', mtime=0),
         detail="Content-Encoding"),
    case("model-gzip-but-allowed-model", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=GZIPPED, body=gzip.compress(CHAT_BODY, mtime=0)),
    case("encoding-twice", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=TWO_ENCODINGS, body=gzip.compress(CHAT_BODY, mtime=0), detail="identity, gzip"),
    # Bytes that are not what their Content-Encoding says: passed on as sent
    # (vaultd does not decode bodies), so refused like any encoded body.
    case("gzip-label-plain-body", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=GZIPPED, detail="Content-Encoding"),
    case("model-number", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":4,"messages":[]}', detail="not a string"),
    case("model-list", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":["gpt-4o-mini"],"messages":[]}', detail="not a string"),
    case("model-null", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'{"model":null,"messages":[]}'),
    case("json-as-text-plain", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=(("Content-Type", "text/plain"),), detail="text/plain"),
    case("json-without-type", MINI, "POST", CHAT_AT + "completions", 403, DENIED, headers=()),
    # aiohttp's parser refuses a second Content-Type before vaultd sees it.
    case("type-twice", MINI, "POST", CHAT_AT + "completions", 400, audited=False,
         headers=(("Content-Type", JSON_TYPE), ("Content-Type", "text/plain"))),
    case("json-latin-1", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=(("Content-Type", "application/json; charset=latin-1"),)),
    case("json-with-bom", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b"\xef\xbb\xbf" + CHAT_BODY),
    case("multipart", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         headers=(("Content-Type", "multipart/form-data; boundary=b"),), body=MULTIPART_BODY),
    case("not-an-object", MINI, "POST", CHAT_AT + "completions", 403, DENIED,
         body=b'["gpt-4o-mini"]'),
    # Gemini names the model in the path.
    case("gemini-allowed", {"models": ["gemini-pro"]}, "POST",
         GEMINI + "gemini-pro:generateContent", 200,
         upstream="/v1beta/models/gemini-pro:generateContent", body=GEMINI_BODY),
    case("gemini-refused", {"models": ["gemini-1.5-*"]}, "POST",
         GEMINI + "gemini-pro:generateContent", 403, DENIED, body=GEMINI_BODY,
         detail='model "gemini-pro"'),
    case("gemini-glob", {"models": ["gemini-1.5-*"]}, "POST",
         GEMINI + "gemini-1.5-flash:streamGenerateContent?alt=sse", 200,
         upstream="/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse",
         body=GEMINI_BODY),
    case("gemini-escaped-colon-refused", {"models": ["gemini-1.5-*"]}, "POST",
         GEMINI + "gemini-pro%3AgenerateContent", 403, DENIED, body=GEMINI_BODY),
    case("gemini-escaped-colon-allowed", {"models": ["gemini-pro"]}, "POST",
         GEMINI + "gemini-pro%3agenerateContent", 200,
         upstream="/v1beta/models/gemini-pro:generateContent", body=GEMINI_BODY),
    case("gemini-escaped-name-refused", {"models": ["gemini-1.5-*"]}, "POST",
         "/proxy/gemini/v1beta/model%73/gemini-pro:generateContent", 403, DENIED,
         body=GEMINI_BODY),
    case("gemini-capital-models-refused", {"models": ["gemini-1.5-*"]}, "POST",
         "/proxy/gemini/v1beta/Models/gemini-pro:generateContent", 403, DENIED,
         body=GEMINI_BODY),
    case("gemini-trailing-slash-refused", {"models": ["gemini-1.5-*"]}, "POST",
         GEMINI + "gemini-pro:generateContent/", 403, DENIED, body=GEMINI_BODY),
    case("gemini-two-colons-refused", {"models": ["gemini-pro"]}, "POST",
         GEMINI + "gemini-pro:x:generateContent", 403, DENIED, body=GEMINI_BODY),
    # A tuned model is named as such: no glob for base models lets it through.
    case("gemini-tuned-model-refused", {"models": ["gemini-*"]}, "POST",
         "/proxy/gemini/v1beta/tunedModels/gemini-x:generateContent", 403, DENIED,
         body=GEMINI_BODY, detail='model "tunedModels/gemini-x"'),
    # A model in the path does not excuse one in the body: both must pass.
    case("gemini-path-ok-body-model-refused", {"models": ["gemini-pro"]}, "POST",
         GEMINI + "gemini-pro:generateContent", 403, DENIED,
         body=b'{"model":"gemini-ultra","contents":[]}', detail='model "gemini-ultra"'),
    # Frameworks that route "/X" as "/x" must not reach past a deny rule.
    case("upper-case-path-denied", DENY_CHAT, "POST", "/proxy/openai/V1/Chat/Completions", 403,
         DENIED, detail='denied by "POST /v1/chat/completions"'),
    # The query parameter Laravel, Symfony and Rack read as the method.
    *(
        case(f"override-param-{query}", ALLOW_CHAT, "POST", CHAT_AT + f"completions?{query}",
             400, OVERRIDE, detail="_method")
        for query in ("_method=DELETE", "x=1&_METHOD=PUT", "%5Fmethod=DELETE")
    ),
]  # fmt: skip


@pytest.mark.parametrize("c", BYPASSES)
async def test_a_request_gets_past_the_policy_only_as_the_policy_says(rig: Rig, c: Case) -> None:
    token = rig.mint(policy=c.policy)
    reply = await send(rig, c.method, c.target, token, c.headers, c.body)
    if c.slug is not None:
        data = reply.problem(c.status, c.slug)
        if c.detail is not None:
            assert c.detail in data["detail"], data["detail"]
    else:
        assert reply.status == c.status, reply.body[:500]
    if c.upstream is None:
        assert rig.calls == []
    else:
        assert sent(rig) == [(c.method, c.upstream)]
        assert rig.calls[0].body == c.body
    expected = c.slug or (DENIED if c.status == 403 else None)
    assert await refusals(rig) == ([expected] if c.audited else [])


async def test_what_was_matched_is_what_the_upstream_reads_byte_for_byte(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_upstream(reply) as (url, heads):
        client, config, ids = await vaultd_for(
            url, tmp_path, aiohttp_client, f'[services.gemini]\nbase_url = "{url}"\n'
        )
        vaultd = Rig(client, config, [], ids)
        vault = client.app[VAULT]
        vault.credentials.add(vault.unlock(), service="gemini", name="g", secret="AIzaKEY0010")
        token = vaultd.mint(
            policy={
                "allow": ["POST /v1/chat/completions", "POST /v1beta/models/*", "GET /caf%C3%A9"],
                "models": ["gpt-4o-mini", "gemini-pro"],
            }
        )
        targets = {
            "/proxy/openai/v1/chat/completion%73": "/v1/chat/completions",
            "/proxy/openai/v1/%63%68at/completions?x=%73": "/v1/chat/completions?x=%73",
            "/proxy/gemini/v1beta/models/gemini-pro%3agenerateContent": (
                "/v1beta/models/gemini-pro:generateContent"
            ),
            "/proxy/openai/caf%c3%a9": "/caf%C3%A9",
        }
        for target in targets:
            method = "GET" if "caf" in target else "POST"
            body = b"" if method == "GET" else CHAT_BODY
            answer = await send(vaultd, method, target, token, [("Content-Type", JSON_TYPE)], body)
            assert answer.status == 200, answer.body[:300]
        lines = [head.split(b"\r\n", 1)[0].decode() for head in heads]
    assert lines == [
        f"{'GET' if 'caf' in path else 'POST'} {path} HTTP/1.1" for path in targets.values()
    ]


@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
async def test_a_method_not_in_upper_case_never_passes_a_deny_rule(rig: Rig, method: str) -> None:
    token = rig.mint(policy=DENY_CHAT)
    headers = (("Content-Type", JSON_TYPE),)
    reply = await send(rig, method, CHAT + "", token, headers, CHAT_BODY)
    if reply.status == 400:
        # aiohttp's parser knows methods in upper case only: refused before vaultd.
        assert await refusals(rig) == []
    else:
        # aiohttp's pure-Python parser upper-cases it: then the rule holds as for POST.
        data = reply.problem(403, DENIED)
        assert data["detail"] in (
            f'the method "{method}" is not upper case (RFC 9110)',
            'denied by "POST /v1/chat/completions"',
        )
        assert await refusals(rig) == [DENIED]
    assert rig.calls == []


async def test_a_body_that_is_not_what_its_two_content_encodings_say_is_refused(
    rig: Rig,
) -> None:
    token = rig.mint(policy=MINI)
    reply = await send(rig, "POST", CHAT, token, TWO_ENCODINGS, CHAT_BODY)
    # Not a 500. Where aiohttp's server undoes the gzip (its C parser), the
    # plain bytes fail to decode: 400; where it does not, the policy cannot
    # read a body under two codings: 403.
    if reply.status == 400:
        reply.problem(400, "malformed-request")
        assert await refusals(rig) == ["malformed-request"]
    else:
        assert "identity, gzip" in reply.problem(403, DENIED)["detail"]
        assert await refusals(rig) == [DENIED]
    assert rig.calls == []


async def test_a_lower_case_method_from_aiohttps_client_is_sent_upper_case_and_denied(
    rig: Rig,
) -> None:
    token = rig.mint(policy=DENY_CHAT)
    response = await rig.client.request(
        "post", CHAT, data=CHAT_BODY, headers={**bearer(token), "Content-Type": JSON_TYPE}
    )
    assert response.method == "POST"
    await problem(response, 403, DENIED)
    assert rig.calls == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_max_inspect_body_is_refused_under_a_models_rule(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    chunked: bool,
) -> None:
    big = await provider_rig(tmp_path, aiohttp_client, aiohttp_server, max_request_body=8 << 20)
    assert big.config.max_inspect_body == 1 << 20  # the default
    token = big.mint(policy=MINI)
    padding = "x" * (2 << 20)
    payload = json.dumps({"model": "gpt-4o-mini", "messages": [], "user": padding}).encode()
    assert len(payload) > 2 << 20

    async def pieces() -> AsyncIterator[bytes]:
        step = 64 << 10
        for i in range(0, len(payload), step):
            yield payload[i : i + step]

    response = await big.client.post(
        CHAT,
        data=pieces() if chunked else io.BytesIO(payload),
        headers={**bearer(token), "Content-Type": JSON_TYPE},
    )
    if chunked:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    body = await problem(response, 403, DENIED)
    assert "larger than [policy] max_inspect_body" in body["detail"]
    assert big.calls == []
    assert await refusals(big) == [DENIED]
    # Under the bound, the same request goes through.
    small = json.dumps({"model": "gpt-4o-mini", "messages": [], "user": "x" * 1000})
    response = await big.client.post(
        CHAT, data=small, headers={**bearer(token), "Content-Type": JSON_TYPE}
    )
    assert response.status == 200, await response.text()
    assert sent(big) == [("POST", "/v1/chat/completions")]


# -- 4. the one credential a session may use ---------------------------------------


async def test_a_session_pinned_to_a_credential_uses_it_and_no_other(rig: Rig) -> None:
    token = rig.mint(policy={"credential": "second"})

    async def chat(choose: str | None) -> Any:
        chosen = {} if choose is None else {"X-Vaultd-Credential": choose}
        return await rig.client.post(
            CHAT,
            json={"model": "gpt-test", "messages": []},
            headers={**bearer(token), **chosen},
        )

    # Without a choice the pinned one, not the service's default (primary).
    assert (await chat(None)).status == 200
    assert rig.calls[-1].headers["Authorization"] == f"Bearer {OTHER_KEY}"
    for other in ("primary", rig.ids["openai/primary"]):
        body = await problem(await chat(other), 403, DENIED)
        assert "only the credential named 'second'" in body["detail"]
    for same in ("second", rig.ids["openai/second"]):
        assert (await chat(same)).status == 200
        assert rig.calls[-1].headers["Authorization"] == f"Bearer {OTHER_KEY}"
    assert len(rig.calls) == 3
    assert all(OPENAI_KEY not in json.dumps(call.headers) for call in rig.calls)
    assert await refusals(rig) == [None, DENIED, DENIED, None, None]
    rows = await rig.audit()
    assert {row["credential_id"] for row in rows if row["refusal"] is None} == {
        rig.ids["openai/second"]
    }


async def test_a_pinned_credential_the_service_lacks_is_no_credential(rig: Rig) -> None:
    token = rig.mint(policy={"credential": "second"})
    response = await rig.client.post(
        "/proxy/anthropic/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
        headers=bearer(token),
    )
    body = await problem(response, 404, "no-credential")
    assert "'second', the one this session may use" in body["detail"]
    assert rig.calls == []


async def test_a_credential_added_later_under_another_name_is_not_usable(rig: Rig) -> None:
    vault = rig.client.app[VAULT]
    third = vault.credentials.add(
        vault.unlock(), service="openai", name="third", secret="sk-proj-THIRDKEYthirdkey0009"
    )
    token = rig.mint(policy={"credential": "primary"})
    response = await rig.client.post(
        CHAT,
        json={"model": "gpt-test", "messages": []},
        headers={**bearer(token), "X-Vaultd-Credential": third.id},
    )
    await problem(response, 403, DENIED)
    assert rig.calls == []


# -- 5. any path, as decided ---------------------------------------------------------

PROPERTY_POLICY: dict[str, Any] = {
    "allow": [
        "GET,POST /v1/**",
        "* /v1beta/models/*:generateContent",
        "GET /caf%C3%A9/*",
    ],
    "deny": [
        "POST /v1/chat/completions",
        "* /v1/files/**",
        "GET /v1/*/s*",
        "DELETE /**",
    ],
}
# Whole segments the rules name, some of them escaped...
WORDS = [
    "v1", "v1beta", "chat", "completions", "completion%73", "%63hat", "models", "files",
    "%66iles", "caf%C3%A9", "caf%c3%a9", "gemini-pro:generateContent",
    "gemini-pro%3AgenerateContent", "gemini-pro%3agenerateContent", "%76%31", "s%2A",
]  # fmt: skip
# ... segments the proxy refuses (rarer: one in four paths or so holds one) ...
REFUSED = ["", ".", "..", "%2e%2e", ".%2E", "%2F", "a%2fb", "%5C", "%2573", "%00", "a;b"]
# ... and pieces of others (no "*" or "_" as such: no token prefix).
PIECES = ["a", "s", "v", "1", "%73", "%53", "%3A", ":", "-", ".", "%C3%A9", "%E2%82%AC",
          "~", "%7E", "@", "%40", "%20"]  # fmt: skip
SEGMENT = st.one_of(
    st.sampled_from(WORDS * 8 + REFUSED),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join),
)
FIRST = st.sampled_from(["v1", "v1", "v1", "%761", "v1beta", "v1beta", "caf%C3%A9", "x", "V1"])
REST = st.builds(lambda first, more: "/".join([first, *more]), FIRST, st.lists(SEGMENT, max_size=4))
METHOD = st.sampled_from(["GET", "GET", "POST", "POST", "PUT", "DELETE"])


async def test_any_path_reaches_the_upstream_exactly_as_decided(rig: Rig) -> None:
    """For generated paths: allowed, the upstream gets that one request at the decided
    path; denied, it gets nothing and the client a 403; unreadable, a 400."""
    policy = check_policy(PROPERTY_POLICY)
    token = rig.mint(policy=PROPERTY_POLICY)
    loop = asyncio.get_running_loop()
    counts = {None: 0, DENIED: 0, BAD_PATH: 0}

    async def check(method: str, rest: str) -> None:
        before = len(rig.calls)
        body = b"{}" if method in ("POST", "PUT") else b""
        headers = (("Content-Type", JSON_TYPE),) if body else ()
        reply = await send(rig, method, "/proxy/openai/" + rest, token, headers, body)
        new = rig.calls[before:]
        try:
            checked_tail(rest)
        except BadProxyPath:
            reply.problem(400, BAD_PATH)
            assert new == []
            counts[BAD_PATH] += 1
            return
        path = policy_path(rest)
        decision = decide(policy, method, path, [])
        if decision.allowed:
            assert reply.status not in (400, 403), reply.body[:300]
            assert len(new) == 1
            assert new[0].method == method
            assert unquote(new[0].path) == path
            assert needless_escapes(new[0].path) == []
            counts[None] += 1
        else:
            data = reply.problem(403, DENIED)
            # (A problem's detail is one line, its runs of spaces made one.)
            assert data["detail"] == " ".join((decision.reason or "").split())
            assert new == []
            counts[DENIED] += 1

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(method=METHOD, rest=REST)
    # One of each outcome, whatever is drawn.
    @example(method="GET", rest="v1/%63hat/completion%73")
    @example(method="POST", rest="v1/chat/completion%73")
    @example(method="GET", rest="v1/x/%2e%2e/files")
    def prop(method: str, rest: str) -> None:
        # Hypothesis runs in a worker thread; the requests on the test's loop.
        asyncio.run_coroutine_threadsafe(check(method, rest), loop).result(timeout=15)

    await asyncio.to_thread(prop)
    audited = await refusals(rig)
    assert len(audited) == sum(counts.values())
    assert {slug: audited.count(slug) for slug in counts} == counts
    assert counts[None] and counts[DENIED] and counts[BAD_PATH], counts


# -- 6. a policy changed on a live session -----------------------------------------


async def test_a_policy_set_on_a_live_session_applies_to_its_next_request(rig: Rig) -> None:
    admin = rig.mint(scopes=["admin", "read"])
    token = rig.mint(name="agent")
    assert (await rig.chat(token)).status == 200
    listed = await (await rig.client.get("/api/sessions", headers=bearer(admin))).json()
    agent = next(s for s in listed if s["name"] == "agent")
    assert agent["policy"] is None
    response = await rig.client.patch(
        f"/api/sessions/{agent['id']}",
        json={"policy": {"models": ["gpt-4o-mini"], "deny": ["get /v1/models"]}},
        headers=bearer(admin),
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["policy"] == {
        "allow": [],
        "deny": ["GET /v1/models"],
        "models": ["gpt-4o-mini"],
        "credential": None,
    }
    await problem(await rig.chat(token), 403, DENIED)  # gpt-test
    models = await rig.client.get("/proxy/openai/v1/models", headers=bearer(token))
    await problem(models, 403, DENIED)
    assert (await rig.chat(token, model="gpt-4o-mini")).status == 200
    response = await rig.client.patch(
        f"/api/sessions/{agent['id']}", json={"policy": None}, headers=bearer(admin)
    )
    assert (await response.json())["policy"] is None
    assert (await rig.chat(token)).status == 200
    models = await rig.client.get("/proxy/openai/v1/models", headers=bearer(token))
    assert models.status == 200
    assert sent(rig) == [("POST", "/v1/chat/completions")] * 3 + [("GET", "/v1/models")]
    assert await refusals(rig) == [None, DENIED, DENIED, None, None, None]


# -- 7. policies the API refuses ---------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "pointer"),
    [
        ({"allow": ["GET /x"], "verbs": ["GET"]}, "/policy/verbs"),
        ({"allow": [""]}, "/policy/allow/0"),
        ({"allow": ["GET /x", "   "]}, "/policy/allow/1"),
        ({"deny": ["GET"]}, "/policy/deny/0"),
        ({"deny": ["/v1/models"]}, "/policy/deny/0"),
        ({"allow": ["GET /v1/***"]}, "/policy/allow/0"),
        ({"allow": ["GET /v1/**x"]}, "/policy/allow/0"),
        ({"allow": ["GET v1/x"]}, "/policy/allow/0"),
        ({"allow": ["GET /v1/x?y=1"]}, "/policy/allow/0"),
        ({"allow": ["GET /v1/%2F"]}, "/policy/allow/0"),
        ({"allow": ["GET /v1/../x"]}, "/policy/allow/0"),
        ({"allow": ["GET /x"] * 10_000}, "/policy/allow"),
        ({"allow": ["GET /" + "a" * 100_000]}, "/policy/allow/0"),
        ({"allow": [5]}, "/policy/allow/0"),
        ({"allow": "GET /x"}, "/policy/allow"),
        ({"models": [""]}, "/policy/models/0"),
        ({"models": ["x" * 1000]}, "/policy/models/0"),
        ({"credential": ""}, "/policy/credential"),
        ({"credential": ["primary"]}, "/policy/credential"),
        (["GET /x"], "/policy"),
    ],
)
async def test_a_bad_policy_is_a_422_naming_the_rule_and_nothing_is_stored(
    rig: Rig, policy: object, pointer: str
) -> None:
    admin = rig.mint(scopes=["admin", "read"])
    response = await rig.client.post(
        "/api/sessions", json={"name": "bad", "policy": policy}, headers=bearer(admin)
    )
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert len(json.dumps(body)) < 4096  # a 100 KB rule is not echoed whole
    listed = await (await rig.client.get("/api/sessions", headers=bearer(admin))).json()
    assert "bad" not in [s["name"] for s in listed]
    # Nor is a live session's policy changed by a bad one.
    agent = next(s for s in listed if s["name"] == "test")
    response = await rig.client.patch(
        f"/api/sessions/{agent['id']}", json={"policy": policy}, headers=bearer(admin)
    )
    body = await problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    listed = await (await rig.client.get("/api/sessions", headers=bearer(admin))).json()
    assert next(s for s in listed if s["id"] == agent["id"])["policy"] is None


async def test_every_bad_rule_is_named_at_once(rig: Rig) -> None:
    admin = rig.mint(scopes=["admin"])
    policy = {"allow": ["GET /ok", "", "GET /***"], "deny": ["nope"], "models": [""]}
    response = await rig.client.post(
        "/api/sessions", json={"name": "bad", "policy": policy}, headers=bearer(admin)
    )
    body = await problem(response, 422, "validation-error")
    assert sorted(e["pointer"] for e in body["errors"]) == [
        "/policy/allow/1",
        "/policy/allow/2",
        "/policy/deny/0",
        "/policy/models/0",
    ]


def test_route_remembers_its_decisions_within_bounds() -> None:
    from vaultd.proxy.policy import MEMO_ENTRIES, route

    policy = check_policy({"deny": ["DELETE /**"], "models": ["gpt-*"]})
    assert policy is not None
    for i in range(3 * MEMO_ENTRIES):
        assert route(policy, "GET", f"v1/item%73/{i}", "", ()) == f"v1/items/{i}"
    assert 0 < len(policy.memo) <= MEMO_ENTRIES
    # A refusal remembered is a refusal again, and so is a header's, which
    # is never remembered (it is not part of the key).
    for _ in range(2):
        with pytest.raises(PolicyDenied, match='denied by "DELETE /\\*\\*"'):
            route(policy, "DELETE", "v1/items/1", "", ())
    route(policy, "POST", "v1/chat", "", ())
    with pytest.raises(MethodOverrideRefused):
        route(policy, "POST", "v1/chat", "", ("X-HTTP-Method-Override",))
    # A path too long to be worth remembering is decided each time.
    long_tail = "v1/" + "a" * 600
    route(policy, "GET", long_tail, "", ())
    assert ("GET", long_tail) not in policy.memo
