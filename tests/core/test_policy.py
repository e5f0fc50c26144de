"""The request policy's pure core (DESIGN 11): rules, globs, decisions and the body's model."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.core.policy import (
    MAX_RULES,
    OVERRIDE_HEADERS,
    READ_ONLY,
    Decision,
    Policy,
    Rule,
    check_policy,
    decide,
    method_override,
    method_override_param,
    model_allowed,
    model_from_body,
    model_from_path,
    parse_rule,
)
from vaultd.errors import ValidationError

JSON = "application/json"


def policy(**fields: object) -> Policy:
    checked = check_policy(fields)
    assert checked is not None
    return checked


def pointers(value: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        check_policy(value)
    return [error.pointer for error in caught.value.errors]


# Rules


@pytest.mark.parametrize(
    ("text", "methods", "path", "normal"),
    [
        ("GET /v1/models", {"GET"}, "/v1/models", "GET /v1/models"),
        ("get,head /v1/**", {"GET", "HEAD"}, "/v1/**", "GET,HEAD /v1/**"),
        ("  Post   /v1/chat ", {"POST"}, "/v1/chat", "POST /v1/chat"),
        ("GET,get,Get /x", {"GET"}, "/x", "GET /x"),
        ("* /**", None, "/**", "* /**"),
        (
            "propfind,M-SEARCH /dav/*",
            {"PROPFIND", "M-SEARCH"},
            "/dav/*",
            "PROPFIND,M-SEARCH /dav/*",
        ),
        ("GET /v1/models/", {"GET"}, "/v1/models/", "GET /v1/models/"),
        ("GET /", {"GET"}, "/", "GET /"),
        ("DELETE /a/%3A/x:y@z;b=c", {"DELETE"}, "/a/%3A/x:y@z;b=c", "DELETE /a/%3A/x:y@z;b=c"),
    ],
)
def test_a_rule_is_parsed_and_normalised(
    text: str, methods: set[str] | None, path: str, normal: str
) -> None:
    rule = parse_rule(text)
    assert rule.methods == (None if methods is None else frozenset(methods))
    assert rule.path == path
    assert rule.text == normal


def test_the_normal_text_keeps_the_methods_in_the_order_written() -> None:
    assert parse_rule("options,GET,head /x").text == "OPTIONS,GET,HEAD /x"
    assert parse_rule(parse_rule("get /a").text) == parse_rule("GET /a")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must not be empty"),
        ("    ", "must not be empty"),
        ("/v1/models", "needs methods before its path"),
        ("GET", "needs a path"),
        ("GET /a /b", "METHODS PATH"),
        ("GET, HEAD /a", "METHODS PATH"),
        ("GET /a/***", '"***" is not a glob'),
        ("GET /****", '"***" is not a glob'),
        ("GET /a**b", "must be a whole segment"),
        ("GET /a/**x", "must be a whole segment"),
        ("GET /**.json", "must be a whole segment"),
        ("GET /a\x00b", "control characters"),
        ("GET\t/a", "control characters"),
        ("GET /a\nDELETE /b", "control characters"),
        ("GET v1/models", 'must start with "/"'),
        ("GET */models", 'must start with "/"'),
        ("GET /a?x=1", "query or fragment"),
        ("GET /a#top", "query or fragment"),
        ("GET /caf\u00e9", "URL path characters"),
        ('GET /a"b', "URL path characters"),
        ("GET /a\\b", "URL path characters"),
        ("GET /a{b}", "URL path characters"),
        ("GET /a%2", "percent-escape"),
        ("GET /a%zz", "percent-escape"),
        ("GET /chat/completion%73", "write 's', not '%73'"),
        ("GET /%2e%2e/x", "write '.', not '%2e'"),
        ("GET /a/%2F/b", "encoded slashes"),
        ("GET /a%2fb", "encoded slashes"),
        ("GET /a%5Cb", "encoded slashes"),
        ("GET /a%0Ab", "control characters"),
        ("GET /a%C2%85b", "control characters"),
        ("GET /a%C3", "must encode UTF-8"),
        ("GET /a%FF%FE", "must encode UTF-8"),
        ("GET /a/./b", '"." and ".."'),
        ("GET /a/..", '"." and ".."'),
        ("GET /a//b", "empty segments"),
        ("GET,* /a", "not a method name"),
        ("*,GET /a", "not a method name"),
        ("GET,,HEAD /a", "not a method name"),
        (",GET /a", "not a method name"),
        ("G(T /a", "not a method name"),
        ("G*T /a", "not a method name"),
        ("X" * 33 + " /a", "not a method name"),
        ("GET /" + "a" * 1024, "at most 1024 characters"),
    ],
)
def test_a_malformed_rule_is_refused_with_a_one_line_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:  # noqa: PT011 (the reason is checked below)
        parse_rule(text)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert len(message) < 200


def test_a_rule_of_exactly_1024_characters_is_accepted() -> None:
    text = "GET /" + "a" * 1019
    assert len(text) == 1024
    assert parse_rule(text).path == text[4:]


def test_rules_compare_and_hash_by_what_they_say() -> None:
    assert parse_rule("get /a") == parse_rule("GET /a")
    assert len({parse_rule("GET /a"), parse_rule("get  /a"), parse_rule("GET /b")}) == 2
    assert Rule(frozenset({"GET"}), "/a/*", "GET /a/*").matches("GET", "/a/b")


# Globs


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("/v1/models", "/v1/models", True),
        ("/v1/models", "/v1/models/", False),
        ("/v1/models/", "/v1/models", False),
        ("/v1/models/", "/v1/models/", True),
        ("/v1/models", "/v1/models/x", False),
        ("/v1/models", "/v1/modelsx", False),
        ("/v1/models", "/V1/models", False),
        # * is any run of characters within one segment, none included.
        ("/v1/*", "/v1/models", True),
        ("/v1/*", "/v1/", True),
        ("/v1/*", "/v1", False),
        ("/v1/*", "/v1/a/b", False),
        ("/v1/*/files", "/v1/x/files", True),
        ("/v1/*/files", "/v1/x/y/files", False),
        ("/v1/*.json", "/v1/a.json", True),
        ("/v1/*.json", "/v1/.json", True),
        ("/v1/*.json", "/v1/a.jsonx", False),
        ("/v1/a*b*c", "/v1/abc", True),
        ("/v1/a*b*c", "/v1/aXbYc", True),
        ("/v1/a*b*c", "/v1/aXbYcZ", False),
        ("/v1/*a*", "/v1/bab", True),
        ("/v1/*a*", "/v1/bbb", False),
        ("/x/*c", "/x/cxc", True),
        ("/x/*c/y", "/x/cxcz/y", False),
        # ** is zero or more whole segments.
        ("/v1/**", "/v1", True),
        ("/v1/**", "/v1/", True),
        ("/v1/**", "/v1/a", True),
        ("/v1/**", "/v1/a/b/c", True),
        ("/v1/**", "/v10", False),
        ("/v1/**", "/v2/v1", False),
        ("/v1/**/files", "/v1/files", True),
        ("/v1/**/files", "/v1/a/b/files", True),
        ("/v1/**/files", "/v1/a/b/files/x", False),
        ("/v1/**/files", "/v1/a/bfiles", False),
        ("/**/x/**/y", "/x/y", True),
        ("/**/x/**/y", "/a/x/b/c/y", True),
        ("/**/x/**/y", "/a/y/b/x", False),
        ("/**/x/**/x", "/x/x/x", True),
        ("/**/**/z", "/z", True),
        ("/**/*/z", "/z", False),
        ("/**/*/z", "/a/z", True),
        ("/**", "/", True),
        ("/**", "/anything/at/all", True),
        ("/**", "/a//b/../c", True),
        ("/", "/", True),
        ("/", "/a", False),
        # Everything else is literal, regex specials too.
        ("/v1/a.b", "/v1/a.b", True),
        ("/v1/a.b", "/v1/aXb", False),
        ("/v1/(x)", "/v1/(x)", True),
        ("/v1/(x)", "/v1/x", False),
        ("/v1/a+b", "/v1/aab", False),
        ("/v1/a+b", "/v1/a+b", True),
        ("/v1/$x", "/v1/$x", True),
        ("/v1/~a", "/v1/~a", True),
        # Matched against the decoded path; a rule's escapes stand for their characters.
        ("/v1/a%3Ab", "/v1/a:b", True),
        ("/v1/a:b", "/v1/a:b", True),
        ("/v1/a%3ab", "/v1/a:b", True),
        ("/v1/%2A", "/v1/*", True),
        ("/v1/%2A", "/v1/x", False),
        ("/v1/%2A*", "/v1/*x", True),
        ("/v1/%2A*", "/v1/x*", False),
        ("/v1/caf%C3%A9", "/v1/caf\u00e9", True),
        ("/v1/a%20b", "/v1/a b", True),
        ("/v1/%25", "/v1/%", True),
        ("/v1/*", "/v1/a:b c", True),
    ],
)
def test_glob_matching(glob: str, path: str, expected: bool) -> None:
    rule = parse_rule(f"* {glob}")
    assert rule.matches("GET", path) is expected


def _run(pattern: list[str], items: list[str], star: str, one: Callable[[str, str], bool]) -> bool:
    """Whether ``items`` match ``pattern``, where ``star`` takes any number of items and
    any other element one item that ``one`` accepts: a plain set-of-states automaton."""

    def skip_stars(states: set[int]) -> set[int]:
        for i in sorted(states):
            while i < len(pattern) and pattern[i] == star:
                i += 1
                states.add(i)
        return states

    states = skip_stars({0})
    for item in items:
        states = skip_stars(
            {i for i in states if i < len(pattern) and pattern[i] == star}
            | {
                i + 1
                for i in states
                if i < len(pattern) and pattern[i] != star and one(pattern[i], item)
            }
        )
    return len(pattern) in states


def reference_matches(glob: str, path: str) -> bool:
    """Segment by segment: ``**`` takes zero or more segments, anything else exactly one,
    in which ``*`` takes any run of characters."""

    def segment_matches(segment_glob: str, segment: str) -> bool:
        return _run(list(segment_glob), list(segment), "*", str.__eq__)

    return _run(glob.split("/")[1:], path.split("/")[1:], "**", segment_matches)


_PATTERN_SEGMENT = st.one_of(
    st.just("**"),
    st.text(alphabet="ab.(*", min_size=1, max_size=4).filter(lambda s: "**" not in s),
)
_PATH_SEGMENT = st.text(alphabet="ab.(", max_size=4)


def _instance(pattern: list[str], data: st.DataObject) -> str:
    """A path made from the pattern (so that matches are common), then perhaps mangled."""
    segments: list[str] = []
    for segment in pattern:
        if segment == "**":
            segments += data.draw(st.lists(_PATH_SEGMENT, max_size=3))
        else:
            fill = st.text(alphabet="ab.(", max_size=3)
            segments.append("".join(c if c != "*" else data.draw(fill) for c in segment))
    if data.draw(st.booleans()):
        del segments[data.draw(st.integers(0, len(segments))) :]
    return "/" + "/".join(segments)


@settings(max_examples=400, deadline=200)
@given(
    pattern=st.lists(_PATTERN_SEGMENT, min_size=1, max_size=6),
    trailing_slash=st.booleans(),
    random_path=st.lists(_PATH_SEGMENT, max_size=7),
    data=st.data(),
)
def test_the_compiled_glob_agrees_with_a_segment_by_segment_matcher(
    pattern: list[str], trailing_slash: bool, random_path: list[str], data: st.DataObject
) -> None:
    glob = "/" + "/".join(pattern) + ("/" if trailing_slash else "")
    try:
        rule = parse_rule(f"* {glob}")
    except ValueError:
        assert any(s in (".", "..") for s in pattern)
        return
    for path in ("/" + "/".join(random_path), _instance(pattern, data)):
        assert rule.matches("GET", path) is reference_matches(glob, path), (glob, path)


def _elapsed(rule: Rule, path: str) -> float:
    best = 1.0
    for _ in range(3):  # the best of three: a busy machine must not fail the test
        start = time.perf_counter()
        rule.matches("GET", path)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("/**/a" * 203 + "/b", "/a" * 2048, False),
        ("/**/a" * 204, "/a" * 1024, True),
        ("/**/*a*a*a*a*a*a*a*a" * 40 + "/b", "/" + "a" * 1023, False),
        ("/" + "*a" * 509 + "*b", "/" + "a" * 4096, False),
        ("/" + "*a" * 509 + "*", "/" + "a" * 4096, True),
        ("/" + "*/" * 340 + "x", "/a" * 2048, False),
        ("/**/*" * 203 + "/x", "/a" * 2048, False),
        ("/**/a/**/a/**/b/**", "/a" * 4096, False),
        ("/**/*a*a*a*a*a*a*a*b/**", "/" + ("a" * 60 + "/") * 60, False),
        ("/**/a*/**/b*/**/c*/**/d*/**/e*/**/f*/**/g*/**/z", "/a/b/c/d/e/f/g/h" * 128, False),
    ],
)
def test_adversarial_globs_match_in_linear_time(glob: str, path: str, expected: bool) -> None:
    # Without the atomic groups these take from seconds to forever (O(n^k)).
    rule = parse_rule(f"* {glob}")
    assert len(rule.text) <= 1024
    assert rule.matches("GET", path) is expected
    assert _elapsed(rule, path) < 0.005, glob[:60]


def test_the_reference_matcher_agrees_on_a_long_adversarial_case() -> None:
    rule = parse_rule("* " + "/**/a*" * 20 + "/b")
    for path in ("/a" * 300, "/a" * 300 + "/b", "/ab" * 100 + "/b"):
        assert rule.matches("GET", path) is reference_matches(rule.path, path)


# decide()


def test_no_policy_or_no_rules_allows_everything() -> None:
    for none in (None, policy(models=["gpt-*"]), policy(credential="primary")):
        assert decide(none, "DELETE", "/x", ["X-HTTP-Method-Override"]) == Decision(True, None)
        assert decide(none, "get", "//../x", []).allowed


def test_deny_wins_over_allow() -> None:
    p = policy(allow=["* /**"], deny=["DELETE /**", "* /admin/**"])
    assert decide(p, "GET", "/repos/a", []) == (True, None)
    assert decide(p, "DELETE", "/repos/a", []) == (False, 'denied by "DELETE /**"')
    assert decide(p, "GET", "/admin", []) == (False, 'denied by "* /admin/**"')


def test_deny_alone_allows_the_rest() -> None:
    p = policy(deny=["delete /**"])
    assert decide(p, "POST", "/x", []).allowed
    assert decide(p, "DELETE", "/x", []).reason == 'denied by "DELETE /**"'


def test_a_non_empty_allow_list_is_exclusive() -> None:
    p = policy(allow=["POST /v1/chat/completions", "GET /v1/models"])
    assert decide(p, "POST", "/v1/chat/completions", []).allowed
    assert decide(p, "GET", "/v1/models", []).allowed
    assert decide(p, "GET", "/v1/chat/completions", []) == (
        False,
        "no allow rule matches GET /v1/chat/completions",
    )
    assert decide(p, "POST", "/v1/files", []).reason == "no allow rule matches POST /v1/files"
    assert decide(p, "GET", "/v1/models/", []).reason == "no allow rule matches GET /v1/models/"


def test_star_and_comma_lists_of_methods() -> None:
    p = policy(allow=["* /public/**", "GET,PUT /data/*"])
    for method in ("GET", "POST", "DELETE", "PATCH", "PROPFIND"):
        assert decide(p, method, "/public/x", []).allowed
    assert decide(p, "PUT", "/data/x", []).allowed
    assert decide(p, "GET", "/data/x", []).allowed
    assert not decide(p, "POST", "/data/x", []).allowed


def test_head_and_get_are_different_methods() -> None:
    only_get = policy(allow=["GET /**"])
    only_head = policy(allow=["HEAD /**"])
    both = policy(allow=["GET,HEAD /**"])
    assert decide(only_get, "GET", "/x", []).allowed
    assert not decide(only_get, "HEAD", "/x", []).allowed
    assert decide(only_head, "HEAD", "/x", []).allowed
    assert not decide(only_head, "GET", "/x", []).allowed
    assert decide(both, "HEAD", "/x", []).allowed and decide(both, "GET", "/x", []).allowed


@pytest.mark.parametrize("method", ["get", "Get", "gET", "delete", "Delete"])
def test_a_method_not_upper_case_is_refused_under_any_rule(method: str) -> None:
    # HTTP methods are case-sensitive: a rule for GET does not allow "get", and
    # "delete" must not slip past a DELETE deny rule to a lenient upstream.
    for p in (
        policy(allow=["GET,DELETE /**"]),
        policy(deny=["DELETE /**"]),
        policy(allow=["* /**"]),
    ):
        decision = decide(p, method, "/x", [])
        assert decision == (False, f'the method "{method}" is not upper case (RFC 9110)')


@pytest.mark.parametrize("method", ["", "GET /x", "G\x00T", "GÉT", "*", "A" * 33])
def test_a_method_that_is_not_a_token_is_refused(method: str) -> None:
    decision = decide(policy(allow=["* /**"]), method, "/x", [])
    assert not decision.allowed
    assert decision.reason is not None and "is not an HTTP method name" in decision.reason
    assert decision.reason.isprintable()


@pytest.mark.parametrize(
    "header",
    [
        "X-HTTP-Method-Override",
        "x-http-method-override",
        "X-HTTP-METHOD-OVERRIDE",
        "X-HTTP-Method",
        "x-method-override",
        "X_HTTP_Method_Override",
    ],
)
def test_method_override_headers_are_refused_only_under_method_rules(header: str) -> None:
    headers = ["Content-Type", header, "Authorization"]
    for p in (policy(allow=["POST /**"]), policy(deny=["DELETE /**"])):
        assert decide(p, "POST", "/x", headers) == (
            False,
            f"the {header} header is refused under method rules",
        )
        assert decide(p, "POST", "/x", ["Content-Type"]).allowed
    assert decide(policy(models=["gpt-*"]), "POST", "/x", headers).allowed
    assert method_override(headers) == header
    assert method_override(["X-HTTP-Method-Overrides", "X-Method"]) is None


def test_the_override_headers_are_lower_case() -> None:
    assert all(h == h.lower() for h in OVERRIDE_HEADERS)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", 'the path "" does not start with "/"'),
        ("v1/models", 'the path "v1/models" does not start with "/"'),
        ("/v1/../admin", 'the path "/v1/../admin" has a "." or ".." segment'),
        ("/v1/./models", 'the path "/v1/./models" has a "." or ".." segment'),
        ("/v1/..", 'the path "/v1/.." has a "." or ".." segment'),
        ("//v1/models", 'the path "//v1/models" has an empty segment ("//")'),
        ("/v1//models", 'the path "/v1//models" has an empty segment ("//")'),
        ("/v1/a\nb", 'the path "/v1/a\\nb" contains control characters'),
        ("/v1/\x7f", 'the path "/v1/\\u007f" contains control characters'),
    ],
)
def test_a_path_no_rule_can_speak_for_is_refused_under_any_rule(path: str, reason: str) -> None:
    for p in (policy(allow=["* /**"]), policy(deny=["DELETE /admin/**"])):
        assert decide(p, "GET", path, []) == (False, reason)


def test_a_trailing_slash_and_dotted_names_are_ordinary_paths() -> None:
    p = policy(allow=["GET /**"])
    for path in ("/", "/v1/", "/v1/a.b", "/v1/...", "/v1/.well-known/x", "/v1/caf\u00e9"):
        assert decide(p, "GET", path, []).allowed, path


def test_a_long_path_is_cut_in_the_reason() -> None:
    reason = decide(policy(allow=["GET /x"]), "GET", "/" + "a" * 5000, []).reason
    assert reason is not None and len(reason) < 260 and reason.endswith("...")


def test_read_only_allows_get_head_and_options_anywhere_and_nothing_else() -> None:
    p = policy(allow=list(READ_ONLY))
    for method in ("GET", "HEAD", "OPTIONS"):
        for path in ("/", "/repos/a/b", "/repos/a/b/issues/1/"):
            assert decide(p, method, path, []).allowed
    for method in ("POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND", "get"):
        assert not decide(p, method, "/repos/a/b", []).allowed
    assert not decide(p, "POST", "/x", ["X-HTTP-Method-Override"]).allowed
    assert not decide(p, "GET", "/x", ["X-HTTP-Method-Override"]).allowed


# check_policy()


def test_an_empty_policy_is_none() -> None:
    empty: list[object] = [None, {}, {"allow": [], "deny": None, "models": [], "credential": None}]
    for value in empty:
        assert check_policy(value) is None


def test_a_policy_round_trips_through_its_json() -> None:
    p = policy(
        allow=["post /v1/chat/completions", "GET /v1/models"],
        deny=("DELETE /**",),  # a TOML table's array may come as any sequence
        models=["gpt-4o-mini", "claude-*"],
        credential="primary",
    )
    assert p.to_json() == {
        "allow": ["POST /v1/chat/completions", "GET /v1/models"],
        "deny": ["DELETE /**"],
        "models": ["gpt-4o-mini", "claude-*"],
        "credential": "primary",
    }
    assert check_policy(json.loads(json.dumps(p.to_json()))) == p
    assert p.method_rules
    assert not policy(models=["x"]).method_rules
    assert policy(credential="primary").to_json()["allow"] == []


def test_unknown_keys_are_named() -> None:
    assert pointers({"allow": ["GET /**"], "foo": 1, "a/b": 2}) == ["/policy/foo", "/policy/a~1b"]


@pytest.mark.parametrize("value", [[], "GET /**", 3, True])
def test_a_policy_that_is_not_an_object_is_refused(value: object) -> None:
    assert pointers(value) == ["/policy"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"allow": "GET /**"}, ["/policy/allow"]),
        ({"deny": {"a": 1}}, ["/policy/deny"]),
        ({"allow": ["GET /a", "GET /b", "GET /c", ""]}, ["/policy/allow/3"]),
        ({"allow": ["GET /a", 3, None]}, ["/policy/allow/1", "/policy/allow/2"]),
        ({"deny": ["/v1/x"]}, ["/policy/deny/0"]),
        ({"deny": ["GET"]}, ["/policy/deny/0"]),
        ({"allow": ["GET /a/***"]}, ["/policy/allow/0"]),
        ({"allow": ["GET /a"] * 10_000}, ["/policy/allow"]),
        ({"allow": ["GET /a"] * (MAX_RULES + 1)}, ["/policy/allow"]),
        ({"allow": ["GET /" + "a" * 100_000]}, ["/policy/allow/0"]),
        ({"models": "gpt-4o"}, ["/policy/models"]),
        (
            {"models": ["ok", 4, ["x"], None]},
            ["/policy/models/1", "/policy/models/2", "/policy/models/3"],
        ),
        ({"models": [""]}, ["/policy/models/0"]),
        ({"models": ["a" * 201]}, ["/policy/models/0"]),
        ({"models": ["gpt\n4"]}, ["/policy/models/0"]),
        ({"models": ["m"] * 101}, ["/policy/models"]),
        ({"credential": 3}, ["/policy/credential"]),
        ({"credential": ""}, ["/policy/credential"]),
        ({"credential": "a\x00b"}, ["/policy/credential"]),
        ({"credential": "x" * 256}, ["/policy/credential"]),
        (
            {
                "allow": ["GET /ok", "GET /***"],
                "deny": ["x"],
                "models": [1],
                "credential": 1,
                "z": 0,
            },
            [
                "/policy/z",
                "/policy/allow/1",
                "/policy/deny/0",
                "/policy/models/0",
                "/policy/credential",
            ],
        ),
    ],
)
def test_a_bad_policy_names_each_bad_element(value: object, expected: list[str]) -> None:
    assert pointers(value) == expected


def test_the_messages_say_what_is_wrong_in_one_short_line() -> None:
    with pytest.raises(ValidationError) as caught:
        check_policy({"allow": ["GET /" + "a" * 100_000, "GET /a/***", "GET"], "foo": 1})
    messages = {e.pointer: e.message for e in caught.value.errors}
    assert "at most 1024 characters" in messages["/policy/allow/0"]
    assert len(messages["/policy/allow/0"]) < 200
    assert messages["/policy/allow/1"].startswith('"GET /a/***": "***" is not a glob')
    assert "needs a path" in messages["/policy/allow/2"]
    assert "allow, deny, models, credential" in messages["/policy/foo"]
    assert "\n" not in str(caught.value)
    with pytest.raises(ValidationError, match="at most 200 rules"):
        check_policy({"deny": ["GET /a"] * 10_000})
    with pytest.raises(ValidationError, match="at most 100 model globs"):
        check_policy({"models": ["a"] * 101})


def test_a_pointer_may_be_given() -> None:
    with pytest.raises(ValidationError) as caught:
        check_policy({"allow": [""]}, "/policies/ci")
    assert [e.pointer for e in caught.value.errors] == ["/policies/ci/allow/0"]


def test_the_limits_are_inclusive() -> None:
    assert len(policy(allow=["GET /a"] * MAX_RULES).allow) == MAX_RULES
    assert len(policy(models=["m" * 200] * 100).models) == 100


# Models


def test_model_globs() -> None:
    p = policy(models=["gpt-4o-mini", "claude-*", "meta-llama/*", "o*-mini", "gpt-4.1"])
    for model in ("gpt-4o-mini", "claude-", "claude-3-5-haiku", "meta-llama/x/y", "o3-mini"):
        assert model_allowed(p, model) == (True, None), model
    for model in ("gpt-4o", "GPT-4o-mini", "gpt-4o-mini ", "xclaude-3", "gpt-4x1", "o3-mini-x", ""):
        assert model_allowed(p, model) == (
            False,
            f"model {json.dumps(model)} is not in the allowed models",
        )
    assert model_allowed(p, None).allowed
    assert model_allowed(None, "anything").allowed
    assert model_allowed(policy(allow=["GET /**"]), "anything").allowed


def test_a_model_name_in_a_reason_is_escaped_and_cut() -> None:
    reason = model_allowed(policy(models=["a"]), "x\n" * 1000).reason
    assert reason is not None and reason.isprintable() and len(reason) < 200


def test_a_long_model_name_against_an_adversarial_glob_is_fast() -> None:
    p = policy(models=["*a" * 99 + "b", "a" + "**a" * 60])
    start = time.perf_counter()
    assert not model_allowed(p, "a" * 1_000_000 + "c").allowed
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("content_type", "body", "model"),
    [
        (JSON, b'{"model": "gpt-4o-mini", "messages": []}', "gpt-4o-mini"),
        ("application/json; charset=utf-8", b'{"model":"m"}', "m"),
        ('Application/JSON; charset="UTF-8"', b'{"model":"m"}', "m"),
        ("application/vnd.api+json", b'{"model":"m"}', "m"),
        (JSON, b'{"messages": [{"model": "inner"}]}', None),
        (JSON, b'{"mod\\u0065l": "escaped"}', "escaped"),
        (JSON, b' \n{"model": "\\u00e9"} ', "\u00e9"),
        (JSON, b'{"model": ""}', ""),
        (None, b"", None),
        ("text/plain", b"", None),
    ],
)
def test_the_model_a_body_names(content_type: str | None, body: bytes, model: str | None) -> None:
    for encoding in (None, "identity"):
        read = model_from_body(body, content_type, encoding)
        assert (read.model, read.unreadable) == (model, None)
        # The object read, for a second strict reader not to parse it again.
        assert read.document == json.loads(body) if body.strip() else read.document is None


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "reason"),
    [
        (gzip.compress(b'{"model":"m"}', mtime=0), JSON, "gzip", "Content-Encoding"),
        (b'{"model":"m"}', JSON, "gzip", "Content-Encoding"),
        (b'{"model":"m"}', JSON, "br", "Content-Encoding"),
        (b'{"model":"m"}', JSON, "identity, gzip", "Content-Encoding"),
        (b'{"model":"m"}', "text/plain", None, "is not JSON"),
        (b'{"model":"m"}', None, None, "is not JSON"),
        (b'{"model":"m"}', "", None, "is not JSON"),
        (b'{"model":"m"}', "text/json", None, "is not JSON"),
        (b'{"model":"m"}', "application/jsonx", None, "is not JSON"),
        (b'{"model":"m"}', "application/+json", None, "is not JSON"),
        (b'{"model":"m"}', "application/x-www-form-urlencoded", None, "is not JSON"),
        (b'--b\r\n\r\n{"model":"m"}\r\n--b--', "multipart/form-data; boundary=b", None, "not JSON"),
        ('{"model":"m"}'.encode("utf-16"), "application/json; charset=utf-16", None, "charset"),
        (b'{"model":"m"}', "application/json; charset=latin-1", None, "charset"),
        (b'{"model":"\xff"}', JSON, None, "not UTF-8"),
        (b'{"model":"\xed\xa0\x80"}', JSON, None, "not UTF-8"),
        (b'\xef\xbb\xbf{"model":"m"}', JSON, None, "not JSON"),
        (b'{"model":"m"', JSON, None, "not JSON"),
        (b"{'model':'m'}", JSON, None, "not JSON"),
        (b'{"model":"m"} {}', JSON, None, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, None, "not JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", JSON, None, "not JSON"),
        (b'["model", "m"]', JSON, None, "not a JSON object"),
        (b'"m"', JSON, None, "not a JSON object"),
        (b"null", JSON, None, "not a JSON object"),
        (b'{"model":"ok","model":"bad"}', JSON, None, 'the key "model" appears twice'),
        (b'{"model":"ok","mod\\u0065l":"bad"}', JSON, None, "appears twice"),
        (b'{"model":"ok","x":{"a":1,"a":2}}', JSON, None, 'the key "a" appears twice'),
        (b'{"model":"ok","x":NaN}', JSON, None, "NaN is not JSON"),
        (b'{"model":"ok","x":-Infinity}', JSON, None, "-Infinity is not JSON"),
        (b'{"model":"ok","x":[Infinity]}', JSON, None, "Infinity is not JSON"),
        (b'{"model":4}', JSON, None, '"model" is not a string'),
        (b'{"model":["a","b"]}', JSON, None, '"model" is not a string'),
        (b'{"model":{"id":"a"}}', JSON, None, '"model" is not a string'),
        (b'{"model":null}', JSON, None, '"model" is not a string'),
        (b'{"model":true}', JSON, None, '"model" is not a string'),
    ],
)
def test_a_body_that_cannot_be_read_for_its_model_fails_closed(
    body: bytes, content_type: str | None, encoding: str | None, reason: str
) -> None:
    read = model_from_body(body, content_type, encoding)
    assert read.model is None
    assert read.unreadable is not None and reason in read.unreadable
    assert read.unreadable.isprintable() and len(read.unreadable) < 150


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1beta/models/gemini-1.5-flash:generateContent", "gemini-1.5-flash"),
        ("/v1/models/gemini-pro:streamGenerateContent", "gemini-pro"),
        ("/v1/projects/p/locations/l/publishers/google/models/gemini-2.0:predict", "gemini-2.0"),
        ("/v1beta/Models/gemini-pro:generateContent", "gemini-pro"),
        ("/v1beta/models/gemini-flash:x:generateContent", "gemini-flash:x:generateContent"),
        ("/v1beta/models/:generateContent", ""),
        ("/v1beta/models/gemini-pro", None),
        ("/v1beta/models", None),
        ("/v1beta/models/", None),
        ("/v1/chat/completions", None),
        ("/v1beta/tunedModels/x:generateContent", "tunedModels/x"),
        ("/v1beta/TunedModels/x:generateContent", "TunedModels/x"),
        ("/v1beta/models/gemini-pro:generateContent/", "gemini-pro"),
        ("/models/a/b:generateContent", None),
        ("/", None),
        ("", None),
    ],
)
def test_the_model_a_gemini_path_names(path: str, model: str | None) -> None:
    assert model_from_path(path) == model


def test_a_gemini_path_with_two_colons_is_held_to_the_globs_whole() -> None:
    p = policy(models=["gemini-flash"])
    model = model_from_path("/v1beta/models/gemini-flash:x:generateContent")
    assert not model_allowed(p, model).allowed


def test_a_deny_rule_holds_with_or_without_a_trailing_slash_and_in_any_case() -> None:
    # Servers that read "/x/" as "/x", or route "/X" as "/x", must not reach
    # past a deny rule; allow rules stay exact (which refuses, not allows).
    deny = policy(deny=["DELETE /v1/items/*", "POST /v1/chat/completions/"])
    for method, path in (
        ("DELETE", "/v1/items/7"),
        ("DELETE", "/v1/items/7/"),
        ("DELETE", "/V1/Items/7"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions/"),
        ("POST", "/V1/CHAT/completions"),
    ):
        assert not decide(deny, method, path, ()).allowed, path
    assert decide(deny, "DELETE", "/v1/other/7", ()).allowed
    allow = policy(allow=["GET /v1/models"])
    assert decide(allow, "GET", "/v1/models", ()).allowed
    for path in ("/v1/models/", "/V1/models"):
        assert not decide(allow, "GET", path, ()).allowed, path


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("", False),
        ("a=1&b=2", False),
        ("_method=DELETE", True),
        ("x=1&_METHOD=delete", True),
        ("%5Fmethod=DELETE", True),
        ("_method", True),
        ("+_method+=PUT", True),
        ("_methods=1", False),
        ("method=DELETE", False),
        ("a=_method", False),
    ],
)
def test_the_method_override_parameter_is_found_however_it_is_written(
    query: str, found: bool
) -> None:
    assert method_override_param(query) is found


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"gpt-4o-mini","Model":"gpt-4o"}',
        b'{"MODEL":"gpt-4o"}',
        b'{"mod\\u0065l":"gpt-4o-mini","model":"gpt-4o"}',
    ],
)
def test_a_key_some_parsers_read_as_model_fails_closed(body: bytes) -> None:
    read = model_from_body(body, JSON, None)
    assert read.model is None and read.unreadable is not None
