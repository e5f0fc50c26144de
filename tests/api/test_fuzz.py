"""Requests generated from ``GET /api/openapi.json`` against a running daemon.

Schemathesis turns the daemon's own OpenAPI document into Hypothesis
strategies, valid requests and invalid ones (wrong types, missing fields,
odd headers, no token); each is sent over a real socket to the app served by
the daemon's runner, with a recording upstream behind the proxy. For every
answer: no 5xx; every 4xx of vaultd's own is a problem body with the DESIGN 5
fields; no stored secret, no session token (bar the one a 201 mints) and no
secret the request itself sent appears in any response's headers or body; the
upstream never receives a session token; the bystander host nothing.

``VAULTD_FUZZ_EXAMPLES`` sets the number of generated requests (CI's default
keeps the file near ten seconds); run with ``-s`` for the tally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.generation.feedback import FeedbackSources

from tests.support.http import PROBLEM_FIELDS
from tests.support.upstream import ANTHROPIC_KEY, OPENAI_KEY, OTHER_KEY, Proxy
from vaultd.http.problems import PROBLEM_CONTENT_TYPE
from vaultd.tokens import TOKEN_PREFIX

EXAMPLES = int(os.environ.get("VAULTD_FUZZ_EXAMPLES", "300"))
SEEDED_SECRETS = (
    OPENAI_KEY,
    OTHER_KEY,
    ANTHROPIC_KEY,
    "ghp_GITHUBKEYgithubkey0004",
    "HDRKEYhdrkey0005",
    "alice:s3cret-PASSWORD-0006",
    "QUERYKEYquerykey0007",
)
# The services seeded with a credential (tests/support/upstream.py), so that some
# generated proxy calls get past the credential lookup and reach the upstream.
SEEDED_SERVICES = ("openai", "anthropic", "github", "hdr", "basicsvc", "querysvc")
TOKEN_LIKE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{20,}")
# A generated secret shorter than this may occur in an answer by chance (an id,
# a timestamp), so only longer ones are looked for.
WATCHED_SECRET_LEN = 12
# No runtime learning (values picked up from earlier answers): a strategy that
# changes between examples is flaky to Hypothesis, and so is its failure report.
FIXED = FeedbackSources()


@dataclass
class Tally:
    tried: int = 0
    sent: int = 0
    refused_by_client: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # Strings a request sent as a credential's secret, and every other string
    # it sent: a secret is only looked for while no public field carried it.
    secrets: set[str] = field(default_factory=set)
    public: set[str] = field(default_factory=set)
    strategies: dict[str, st.SearchStrategy[Case[Any]]] = field(default_factory=dict)
    admin: str = ""

    def watched_secrets(self) -> list[str]:
        return [s for s in self.secrets if not any(s in p for p in self.public)]


@pytest.fixture
def tally() -> Iterator[Tally]:
    found = Tally()
    yield found
    server_errors = sum(n for status, n in found.statuses.items() if status >= 500)
    print(
        f"\nfuzz: {found.tried} generated requests, {found.sent} sent, "
        f"{found.refused_by_client} refused by the HTTP client, {server_errors} 5xx; "
        f"statuses {dict(sorted(found.statuses.items()))}"
    )
    # The control: a run that sent (almost) nothing proves nothing.
    assert found.sent >= EXAMPLES // 2, found


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def note_request(case: Case[Any], tally: Tally) -> None:
    body = case.body if isinstance(case.body, dict) else {}
    secret = body.get("secret")
    if isinstance(secret, str) and len(secret) >= WATCHED_SECRET_LEN:
        tally.secrets.add(secret)
    rest = {k: v for k, v in body.items() if k != "secret"}
    for part in (rest, case.path_parameters, case.query, case.headers):
        tally.public.update(strings_in(part))
    if not isinstance(case.body, dict):
        tally.public.update(strings_in(case.body))


def case_strategies(doc: dict[str, Any], proxy: Proxy) -> dict[str, st.SearchStrategy[Case[Any]]]:
    """Strategies by kind: any operation, proxied calls to the upstream, one credential's."""
    schema = schemathesis.openapi.from_dict(doc)

    def operations(
        path: str, mode: GenerationMode, methods: tuple[str, ...] = (), **fixed: str
    ) -> st.SearchStrategy[Case[Any]]:
        # Method by method: a path's own "parameters" list is not an operation,
        # which the path-level as_strategy of schemathesis 4 trips over.
        item = schema[path]
        return st.one_of(
            [
                item[method.upper()].as_strategy(mode, feedback=FIXED, path_parameters=fixed)
                for method in doc["paths"][path]
                if method != "parameters" and (not methods or method in methods)
            ]
        )

    # A credential for the generated reads and PATCHes to work on, past the
    # 404 of an unknown id (not deleted: every later example would 404 again).
    target = proxy.keys["github/gh"]
    return {
        "any": st.one_of(
            schema.as_strategy(GenerationMode.POSITIVE, feedback=FIXED),
            schema.as_strategy(GenerationMode.NEGATIVE, feedback=FIXED),
        ),
        # Services seeded with a credential: past the lookups, to the upstream,
        # where an echoed key could leak.
        "proxied": st.one_of(
            [
                operations("/proxy/{service}/{path}", GenerationMode.POSITIVE, service=name)
                for name in SEEDED_SERVICES
            ]
        ),
        "credential": st.one_of(
            [
                operations("/api/credentials/{id}", mode, ("get", "patch"), id=target)
                for mode in GenerationMode
            ]
        ),
    }


def check_response(
    case: Case[Any], response: schemathesis.Response, tally: Tally, known_tokens: list[str]
) -> None:
    label = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{label}: {response.content[:500]!r}"
    assert response.headers.get("x-request-id"), label
    upstream_answer = "x-upstream-request-id" in response.headers
    if response.status_code >= 400 and not upstream_answer:
        content_type = response.headers["content-type"][0]
        assert content_type.startswith(PROBLEM_CONTENT_TYPE), label
    if response.status_code >= 400 and not upstream_answer and case.method != "HEAD":
        problem = json.loads(response.content)
        assert set(problem) >= PROBLEM_FIELDS, (label, problem)
        assert problem["status"] == response.status_code, (label, problem)
        # DESIGN 5: on /proxy/ the text is where the services' SDKs read it.
        error = problem["error"]
        text = error["message"] if case.formatted_path.startswith("/proxy/") else error
        assert text == problem["detail"], (label, problem)
        assert problem["request_id"] == response.headers["x-request-id"][0], label

    head = "\n".join(f"{k}: {v}" for k, values in response.headers.items() for v in values)
    body = response.content.decode("utf-8", errors="replace")
    texts = [head, body]
    if response.headers.get("content-type", [""])[0].split(";")[0].endswith("json"):
        with contextlib.suppress(ValueError):  # \u escapes undone
            texts.extend(strings_in(json.loads(response.content)))
    whole = "\n".join(texts)
    for secret in (*SEEDED_SECRETS, *tally.watched_secrets()):
        assert secret not in whole, f"{label}: a secret is in the answer"
    for token in known_tokens:
        assert token not in whole, f"{label}: a session token is in the answer"
    minted = case.method == "POST" and case.path == "/api/sessions"
    if not (minted and response.status_code == 201):
        assert not TOKEN_LIKE.search(whole), f"{label}: a token-shaped string is in the answer"


def send(case: Case[Any], base_url: str) -> schemathesis.Response:
    return case.call(base_url=base_url, allow_redirects=False, timeout=15)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The daemon is started once and serves every example: deliberate.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_generated_requests(proxy: Proxy, tally: Tally, data: st.DataObject) -> None:
    if not tally.strategies:
        # From the document the daemon serves, once; reused by every example.
        served = await proxy.client.get("/api/openapi.json")
        assert served.status == 200
        tally.strategies = case_strategies(await served.json(), proxy)
        tally.admin = proxy.mint(name="fuzz-admin", scopes=["admin"])
    kind = data.draw(st.sampled_from(["any"] * 2 + ["proxied"] * 2 + ["credential"]), label="kind")
    case = data.draw(tally.strategies[kind], label="case")
    # Mostly admin, so that generated writes get past the scope check; with no
    # token of ours, whatever Authorization schemathesis made up is sent.
    who = data.draw(st.sampled_from(["admin"] * 3 + ["read-proxy"] * 2 + ["none"]), label="token")
    token = {"admin": tally.admin, "read-proxy": proxy.token, "none": ""}[who]
    if token:
        case.headers["Authorization"] = f"Bearer {token}"  # case-insensitive: replaces theirs

    tally.tried += 1
    note_request(case, tally)
    try:
        response = await asyncio.to_thread(send, case, str(proxy.client.make_url("")))
    except ValueError:  # requests' InvalidHeader and InvalidURL among them
        # The client library would not put this on the wire (a header value
        # with a newline, say): nothing reached the daemon.
        tally.refused_by_client += 1
        return
    tally.sent += 1
    tally.statuses[response.status_code] += 1
    check_response(case, response, tally, [tally.admin, proxy.token])

    assert proxy.bystander.seen == []
    for seen in proxy.upstream.seen:
        forwarded = seen.path_qs + json.dumps(seen.headers)
        assert TOKEN_PREFIX not in forwarded, seen
