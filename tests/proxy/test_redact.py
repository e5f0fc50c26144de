"""The secret never reaches a client whole, however the upstream splits its body."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.proxy.decisions import secret_forms
from vaultd.proxy.redact import REPLACEMENT, Patterns
from vaultd.services import Service

SECRET = b"sk-proj-SECRETsecretSECRET1234"


def run(chunks: list[bytes], secret: bytes = SECRET) -> bytes:
    redactor = Patterns([secret]).redactor()
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return pieces


def test_whole_and_split_secret_replaced() -> None:
    body = b'{"error": "bad key ' + SECRET + b'", "again": "' + SECRET + b'"}'
    expected = body.replace(SECRET, REPLACEMENT)
    for cut in range(len(body) + 1):
        assert run([body[:cut], body[cut:]]) == expected


def test_byte_by_byte() -> None:
    body = b"x" * 5 + SECRET + b"y" * 5
    assert run([bytes([b]) for b in body]) == b"xxxxx" + REPLACEMENT + b"yyyyy"


def test_prefix_of_secret_at_the_end_is_released() -> None:
    body = b"hello " + SECRET[:-1]
    assert run([body]) == body


@settings(max_examples=300)
@given(
    before=st.binary(max_size=60),
    after=st.binary(max_size=60),
    copies=st.integers(min_value=0, max_value=3),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_any_split_matches_whole_body_replacement(
    before: bytes, after: bytes, copies: int, cuts: list[int]
) -> None:
    body = before + SECRET * copies + after
    out = run(split(body, cuts))
    assert SECRET not in out
    assert out == run([body])


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_bodies_without_the_secret_pass_unchanged(data: bytes, cuts: list[int]) -> None:
    if SECRET in data:
        return
    assert run(split(data, cuts)) == data


# -- several forms at once (the key as sent, base64, percent-encoded, JSON) ---------

B64 = base64.b64encode(b"alice:" + SECRET).rstrip(b"=")
FORMS = (SECRET, B64, b'sk-we\\/ird\\"q', b"abcab", b"abcabcX", b"cab")


def run_forms(chunks: list[bytes], forms: tuple[bytes, ...] = FORMS) -> bytes:
    redactor = Patterns(forms).redactor()
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def test_prefix_of_a_longer_form_waits_for_the_decision() -> None:
    # "abcab" is whole here, but could have been the start of "abcabcX": every
    # split must give what the whole body gives.
    for body in (b"xxabcabcXyy", b"xxabcabcYyy", b"xxabcab", b"cabcabc"):
        whole = Patterns(FORMS).sub(body)
        for cut in range(len(body) + 1):
            assert run_forms([body[:cut], body[cut:]]) == whole, (body, cut)
    assert Patterns(FORMS).sub(b"xxabcabcXyy") == b"xx" + REPLACEMENT + b"yy"


@settings(max_examples=300)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(FORMS), st.binary(max_size=12), st.sampled_from(FORMS[3:])),
        max_size=10,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_many_forms_any_split_matches_whole_body(parts: list[bytes], cuts: list[int]) -> None:
    body = b"".join(parts)
    out = run_forms(split(body, cuts))
    assert out == Patterns(FORMS).sub(body)
    # The forms that share no bytes with the others never survive.
    for form in FORMS[:3]:
        assert form not in out


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_hold_back_never_exceeds_longest_form_minus_one(data: bytes, cuts: list[int]) -> None:
    patterns = Patterns(FORMS)
    redactor = patterns.redactor()
    fed = sent = 0
    for chunk in split(data, cuts):
        fed += len(chunk)
        out = redactor.feed(chunk)
        sent += len(out)
        if not patterns.found_in(data):
            assert sent >= fed - (patterns.longest - 1)


def test_secret_forms_cover_how_each_auth_style_sends_the_key() -> None:
    basic = Service(name="b", base_url="https://b.example", auth="basic")
    query = Service(name="q", base_url="https://q.example", auth="query")
    bearer = Service(name="o", base_url="https://o.example")
    forms = set(secret_forms(basic, 'alice:pa/ss"word-0001'))
    assert base64.b64encode(b'alice:pa/ss"word-0001').rstrip(b"=") in forms
    assert b'pa/ss"word-0001' in forms  # the password on its own
    assert b'alice:pa/ss\\"word-0001' in forms  # JSON
    assert b'alice:pa\\/ss\\"word-0001' in forms  # JSON with \/
    assert b"alice%3Apa%2Fss%22word-0001" in forms  # percent-encoded
    forms = set(secret_forms(query, "k y+é"))
    assert {b"k%20y%2B%C3%A9", b"k+y%2B%C3%A9", b"k y+\\u00e9", "k y+é".encode()} <= forms
    # Short parts are not redacted on their own: they would hit ordinary text.
    assert b"pw" not in set(secret_forms(basic, "alice:pw"))
    # A plain key: itself, and itself with every character a JSON escape.
    plain = "sk-plain-0001"
    escaped_throughout = "".join(f"\\u{ord(c):04x}" for c in plain).encode()
    assert set(secret_forms(bearer, plain)) == {plain.encode(), escaped_throughout}


# -- escaped echoes: .NET's \uXXXX, every character escaped, any case, HTML ----------

# A key with characters encoders escape (+ and &) and non-ASCII ones.
ODD_KEY = "sk-Ab+Cd&Ef-\u00fcn\u00ef-0042XYZ"


def _u(char: str, upper: bool) -> str:
    code = f"{ord(char):04x}"
    return "\\u" + (code.upper() if upper else code)


def _mixed(char: str) -> str:
    """An escape with its hex letters in alternating case: ``\\u00Fc``."""
    code = f"{ord(char):04x}"
    return "\\u" + "".join(c.upper() if i % 2 else c for i, c in enumerate(code))


# Written here by hand, as each encoder writes them, not taken from secret_forms.
ECHOES = {
    ".NET System.Text.Json": "".join(
        _u(c, True) if c in "+&" or not c.isascii() else c for c in ODD_KEY
    ),
    "every character, upper-case hex": "".join(_u(c, True) for c in ODD_KEY),
    "every character, lower-case hex": "".join(_u(c, False) for c in ODD_KEY),
    "every character, mixed case": "".join(_mixed(c) for c in ODD_KEY),
    "Python json, \\u00fc": ODD_KEY.replace("\u00fc", "\\u00fc").replace("\u00ef", "\\u00ef"),
    "HTML decimal": "".join({"+": "&#43;", "&": "&#38;"}.get(c, c) for c in ODD_KEY),
    "HTML hex, upper": "".join({"+": "&#x2B;", "&": "&#X26;"}.get(c, c) for c in ODD_KEY),
    "HTML named and decimal": "".join({"+": "&#43;", "&": "&amp;"}.get(c, c) for c in ODD_KEY),
}


def test_each_escaped_echo_is_redacted_at_every_split() -> None:
    service = Service(name="o", base_url="https://o.example")
    patterns = Patterns(secret_forms(service, ODD_KEY))
    for name, echo in ECHOES.items():
        body = b'{"error": "invalid key ' + echo.encode() + b'", "n": 1}'
        assert patterns.found_in(body), name
        assert patterns.sub(body) == b'{"error": "invalid key [REDACTED]", "n": 1}', name
        for cut in range(1, len(body)):
            redactor = patterns.redactor()
            out = redactor.feed(body[:cut]) + redactor.feed(body[cut:]) + redactor.flush()
            assert out == b'{"error": "invalid key [REDACTED]", "n": 1}', (name, cut)
        redactor = patterns.redactor()
        out = b"".join(redactor.feed(body[i : i + 1]) for i in range(len(body)))
        assert out + redactor.flush() == patterns.sub(body), name


def test_escapes_of_other_text_pass_untouched() -> None:
    patterns = Patterns(secret_forms(Service(name="o", base_url="https://o.example"), ODD_KEY))
    body = b'caf\\u00e9 &amp; cr\\u00C8me &#43; "sk-Ab+Cd" \\n'
    assert not patterns.found_in(body)
    redactor = patterns.redactor()
    assert redactor.feed(body) + redactor.flush() == body
