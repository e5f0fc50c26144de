"""The secret never reaches a client whole, however the upstream splits its body."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.redact import REPLACEMENT, Redactor

SECRET = b"sk-proj-SECRETsecretSECRET1234"


def run(chunks: list[bytes], secret: bytes = SECRET) -> bytes:
    redactor = Redactor(secret)
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
