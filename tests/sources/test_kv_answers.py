"""What a source's answers may hold before vaultd keeps any of it (DESIGN 13).

The server is input like any other: listings with hostile keys, secrets
with control characters or no secret at all, bad custom_metadata. Each is
refused with a message that never quotes the secret.
"""

from __future__ import annotations

from typing import Any

import pytest

from vaultd.sources.errors import SourceSecretInvalid, SourceUnavailable
from vaultd.sources.kv import MAX_KEYS, parse_listing, parse_secret

SECRET = "sk-team-0123456789abcdefghij"


def _read(data: dict[str, Any], custom: Any = None, version: Any = 3) -> dict[str, Any]:
    return {
        "data": {
            "data": data,
            "metadata": {
                "created_time": "2026-11-30T10:00:00.123456789Z",
                "custom_metadata": custom,
                "deletion_time": "",
                "destroyed": False,
                "version": version,
            },
        }
    }


def test_a_listing_keeps_plain_names_and_reports_the_rest() -> None:
    keys = [
        "openai/",
        "team",
        "..",
        "../",
        "%2e%2e",
        "",
        "/",
        "a\x01b",
        "a/b",
        ".hidden",
        7,
        "ok.v2",
    ]
    listing = parse_listing({"data": {"keys": keys}})
    assert listing.folders == ("openai",)
    assert listing.entries == ("team", "ok.v2")
    assert len(listing.refused) == 9
    # Refused keys are shown escaped: no control character reaches a log line.
    assert all(r.isprintable() for r in listing.refused)


def test_a_listing_is_bounded() -> None:
    listing = parse_listing({"data": {"keys": [f"k{i}" for i in range(MAX_KEYS + 50)]}})
    assert len(listing.entries) == MAX_KEYS
    assert "50 more keys" in listing.refused[-1]


@pytest.mark.parametrize("body", [None, [], {"data": None}, {"data": {"keys": "a"}}])
def test_a_listing_of_the_wrong_shape_is_refused(body: object) -> None:
    with pytest.raises(SourceUnavailable):
        parse_listing(body)


def test_a_secret_and_what_is_said_of_it() -> None:
    custom = {
        "team": "ml",
        "default": "true",
        "expires_at": "2030-01-01T00:00:00Z",
        "max_requests_per_day": "500",
        "max_cost_usd_per_day": "2.5",
    }
    value, meta = parse_secret(_read({"secret": SECRET, "type": "api_key"}, custom))
    assert value == SECRET
    assert meta.version == 3
    assert meta.metadata == {"team": "ml"}  # the keys vaultd reads are not metadata
    assert meta.default is True
    assert meta.expires_at == 1893456000
    assert meta.limits == {"max_requests_per_day": 500, "max_cost_usd_per_day": 2.5}
    assert meta.written_at == 1796032800  # nine digits of fraction, read


@pytest.mark.parametrize(
    ("data", "custom", "why"),
    [
        ({"secret": "sk-abc\ndef-0123456789abc"}, None, "control characters"),
        ({"secret": "sk-abc\x1b[2Jdef-0123456789"}, None, "control characters"),
        ({"secret": "x" * 20000}, None, "at most"),
        ({"secret": " sk-padded-0123456789abcdef"}, None, "white space"),
        ({"secret": ""}, None, "empty"),
        ({"secret": 42}, None, "must be a string"),
        ({"key": SECRET}, None, "no secret field"),
        ({"secret": SECRET, "type": "Bad Type"}, None, "lower-case word"),
        ({"secret": SECRET}, {"expires_at": "next tuesday"}, "expires_at"),
        ({"secret": SECRET}, {"max_requests_per_day": "-1"}, "max_requests_per_day"),
        ({"secret": SECRET}, {"max_cost_usd_per_day": "nan"}, "max_cost_usd_per_day"),
        ({"secret": SECRET}, {"team": "a\x07b"}, "custom_metadata"),
        ({"secret": SECRET}, ["not", "a", "map"], "custom_metadata"),
    ],
)
def test_an_unusable_secret_is_refused_without_quoting_it(
    data: dict[str, Any], custom: Any, why: str
) -> None:
    with pytest.raises(SourceSecretInvalid, match=why) as caught:
        parse_secret(_read(data, custom))
    secret = data.get("secret")
    if isinstance(secret, str) and secret:
        assert secret.strip() not in str(caught.value)
    assert str(caught.value).isprintable()


@pytest.mark.parametrize("version", [None, 0, True, "3"])
def test_an_answer_without_a_version_is_refused(version: Any) -> None:
    with pytest.raises(SourceSecretInvalid, match="version"):
        parse_secret(_read({"secret": SECRET}, None, version))


def test_expires_at_in_unix_seconds() -> None:
    _, meta = parse_secret(_read({"secret": SECRET}, {"expires_at": "1893456000"}))
    assert meta.expires_at == 1893456000
